"""Cheap commands stay cheap: planning a pipeline imports no torch (seconds of start-up), and a
proposal worker imports no SciPy until a saliency method needs it. Each check runs in a fresh
interpreter, since this test process has long imported everything."""
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "detectron2")


def _modules_after(code: str) -> set:
    """The heavy modules loaded once `code` has run in a fresh interpreter."""
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY + ('scipy',)!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("preset,launcher", [("demo", "local"), ("paper", "slurm")])
def test_planning_a_preset_imports_no_torch(tmp_path, preset, launcher):
    """The paper preset's 8 GPUs per task are counted against this machine's (torch) only when its
    tasks would run here: its dry run on a login node names the cluster's launcher."""
    loaded = _modules_after(
        "from objcrop.pipeline.cli import main\n"
        f"assert main(['--preset', {preset!r}, '--out', {str(tmp_path)!r}, '--launcher', {launcher!r}, "
        "'--dry-run']) == 0")
    assert not loaded & set(HEAVY), loaded


def test_view_config_imports_no_torch_but_the_policies_still_resolve():
    assert not _modules_after("from objcrop.pretrain.views import get_views_cfg, POLICIES") & set(HEAVY)
    from objcrop.pretrain import views
    from objcrop.pretrain.views.policies import ViewPolicy

    assert views.ViewPolicy is ViewPolicy
    with pytest.raises(AttributeError):
        views.no_such_name


def test_a_proposal_worker_imports_no_scipy_until_a_superpixel_method_runs():
    assert "scipy" not in _modules_after("import objcrop.pretrain.proposals.compute, objcrop.pretrain.proposals.methods")
    assert "scipy" in _modules_after(
        "import numpy as np\nfrom objcrop.pretrain.proposals.saliency import geodesic\n"
        "geodesic(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8), n_segments=20)")
