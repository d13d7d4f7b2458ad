"""Shared fixtures. Tests use small images and few iterations, but the real code paths."""
import os

import pytest

# Tests must not depend on what happens to be in the user's dataset folder.
os.environ.setdefault("OBJCROP_TESTING", "1")
# Keep CPU tests on the 2 cores of CI without oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "2")


# The files that take longest (`pytest tests --durations=60`: the real-SLURM pipeline runs, then the
# killed-and-resumed tiny pipeline), longest first.
LONGEST_FILES = ("test_slurm_real.py", "test_pipeline_smoke.py")


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite in pytest-xdist processes with `--dist loadfile --no-loadscope-reorder`:
    each file on one process (a fixture a file builds once is still built once, and never by two
    processes side by side), files handed out in collection order. Here, in each process, the longest
    files come first, so that they start at once and the others fill the other process around them."""
    if hasattr(config, "workerinput"):  # an xdist worker process; a plain run keeps its order
        items.sort(key=lambda item: _longest_first(item.path.name))


def _longest_first(filename: str) -> int:
    return LONGEST_FILES.index(filename) if filename in LONGEST_FILES else len(LONGEST_FILES)


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is faster than two (and far faster on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small embedded dataset (24 images) generated once per test session."""
    from objcrop.datasets.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(str(out), num_images=24, seed=0)
    return str(out)
