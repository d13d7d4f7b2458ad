"""Loading the repository's scripts/ and benchmarks/ files as modules: they are run as files, not installed."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_repo_module(relpath: str):
    """The module of REPO/relpath (e.g. "scripts/pipeline.py"), under a name of its own."""
    name = "objcrop_test_" + os.path.splitext(relpath)[0].replace(os.sep, "_").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod
