"""Shared fixtures. Tests use small images and few iterations, but the real code paths."""
import os

import pytest

# Tests must not depend on what happens to be in the user's dataset folder.
os.environ.setdefault("OBJCROP_TESTING", "1")
# Keep CPU tests on the 2 cores of CI without oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
