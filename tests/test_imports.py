"""Imports between the stages point one way (docs/ARCHITECTURE.md), read from the source with `ast`.

    core (objcrop/)  <-  pretrain/            (no detectron2, not even through the core)
                     <-  convert/  <-  detection/
                     <-  report/              (reads files only)
    objcrop/pipeline/, the orchestrator, sits on top and may import any stage.

Every import counts, those inside functions too: a lazy import is still a dependency, it only
fails later. `objcrop/cli.py` names the stages' entry modules as strings, which is not an import.
"""
import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = {"pretrain": "pretrain", "convert": "convert", "detection": "detection", "report": "report"}
# layer -> the layers it may import (besides itself). A DAG, so no cycle can pass.
ALLOWED: Dict[str, Set[str]] = {
    "core": set(),
    "pretrain": {"core"},
    "convert": {"core"},
    "detection": {"core", "convert"},
    "report": {"core"},
    "pipeline": {"core", "pretrain", "convert", "detection", "report"},
}


def _layer_of_module(module: str) -> str:
    """The layer of an objcrop module name ('' for anything outside objcrop)."""
    parts = module.split(".")
    if parts[0] != "objcrop":
        return ""
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    if len(parts) > 1 and parts[1] == "pipeline":
        return "pipeline"
    return "core"


def _source_files() -> Iterator[Tuple[str, str]]:
    """(path, dotted module name) of every Python file of the core and the stage folders."""
    for folder, namespace in [("objcrop", "objcrop")] + [(f, f"objcrop.{n}") for n, f in STAGES.items()]:
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, name), os.path.join(ROOT, folder))[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    yield os.path.join(root, name), ".".join([namespace] + rel)


def imported_modules(path: str, module: str) -> List[Tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from objcrop import convert` imports the stage itself.
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names] if base == "objcrop" \
                else [(node.lineno, base)]
    return out


def _graph() -> Dict[str, List[Tuple[str, int, str]]]:
    """module -> [(path, line, imported module)]."""
    return {module: [(path, line, name) for line, name in imported_modules(path, module)]
            for path, module in _source_files()}


def stage_violations(graph) -> List[str]:
    bad = []
    for module, imports in graph.items():
        layer = _layer_of_module(module)
        for path, line, name in imports:
            target = _layer_of_module(name)
            if target and target != layer and target not in ALLOWED[layer]:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line}: {layer} imports {name} ({target})")
    return bad


def detectron2_reached_from_pretrain(graph) -> List[str]:
    """Import chains from pretrain/ to detectron2, through any objcrop module."""
    bad = []
    for start in (m for m in graph if _layer_of_module(m) == "pretrain"):
        seen, stack = {start}, [(start, [start])]
        while stack:
            module, chain = stack.pop()
            for path, line, name in graph.get(module, []):
                if name.split(".")[0] == "detectron2":
                    bad.append(" -> ".join(chain) + f" -> {name} ({os.path.relpath(path, ROOT)}:{line})")
                for candidate in (name, name.rsplit(".", 1)[0]):  # `from pkg import module` names either
                    if candidate in graph and candidate not in seen:
                        seen.add(candidate)
                        stack.append((candidate, chain + [candidate]))
    return bad


def test_stages_import_only_downstream_of_themselves():
    graph = _graph()
    assert len({_layer_of_module(m) for m in graph}) >= len(STAGES) + 1, "the stage folders were not found"
    bad = stage_violations(graph)
    assert not bad, ("imports against the stage direction (see this file's docstring; move the shared code "
                     "down to where both may import it, or have the upstream stage write a file):\n" + "\n".join(bad))


def test_pretraining_never_reaches_detectron2():
    chains = detectron2_reached_from_pretrain(_graph())
    assert not chains, "pretraining must run without detectron2:\n" + "\n".join(chains)


def test_the_checker_catches_upward_lazy_relative_and_transitive_imports(tmp_path):
    """The rules above, fed a made-up tree: each planted import must be reported."""
    files = {
        "convert/verify.py": "def f():\n    from objcrop.detection.config import load_config\n",
        "objcrop/io.py": "from objcrop import report\n",
        "report/tables.py": "from ..convert import names\n",
        "detection/train_net.py": "from objcrop.convert.writer import read_detectron2_pkl\n",
        "pretrain/probe.py": "import objcrop.datasets.voc\n",
        "objcrop/datasets/voc.py": "def g():\n    import detectron2.data\n",
    }
    graph = {}
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        folder, rest = rel.split("/", 1)
        module = ("objcrop." if folder != "objcrop" else "") + folder + "." + rest[:-3].replace("/", ".")
        graph[module] = [(os.path.join(ROOT, rel), line, name) for line, name in imported_modules(str(path), module)]
    found = stage_violations(graph)
    assert [v.split(":")[0] for v in found] == ["convert/verify.py", "objcrop/io.py", "report/tables.py"]
    assert "convert imports objcrop.detection.config (detection)" in found[0]
    assert "report imports objcrop.convert (convert)" in found[2]
    chains = detectron2_reached_from_pretrain(graph)
    assert chains and chains[0].startswith("objcrop.pretrain.probe -> objcrop.datasets.voc -> detectron2.data")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_allowed_imports_form_no_cycle(layer):
    """Following ALLOWED from any layer never comes back to it."""
    stack, seen = list(ALLOWED[layer]), set()
    while stack:
        other = stack.pop()
        assert other != layer, f"{layer} can reach itself through the allowed imports"
        if other not in seen:
            seen.add(other)
            stack.extend(ALLOWED[other])
