"""objcrop installs as a wheel into someone else's environment (issue 24): its metadata declares
what it imports, the wheel holds every package and shipped config, and the user-brought
packages (torch, torchvision, detectron2) are checked with a one-line message."""
import glob
import os
import subprocess
import sys
import zipfile

import pytest

from objcrop.requirements import MissingRequirement, check, parse_version, require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version_parsing_and_checks(monkeypatch):
    assert parse_version("2.3.1+cu121") == (2, 3)
    assert parse_version("0.7.2") == (0, 7)
    assert parse_version("weird") == ()
    assert check("torch") is None
    import torch

    monkeypatch.setattr(torch, "__version__", "1.13.0")
    with pytest.raises(MissingRequirement, match=r"torch >= 2\.1, found 1\.13\.0: install PyTorch"):
        require("torch")


def test_a_missing_user_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # import fails as if not installed
    problem = check("detectron2")
    assert "detectron2 >= 0.6" in problem and "build detectron2" in problem and "\n" not in problem


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), REPO],
                   check=True, cwd=str(out))
    (path,) = glob.glob(str(out / "objcrop-*.whl"))
    return path


def test_wheel_metadata_declares_dependencies_but_not_the_user_brought_ones(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    names = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requires}
    assert {"numpy", "fvcore", "opencv-contrib-python-headless", "scikit-image"} <= names
    assert not names & {"torch", "torchvision", "detectron2", "sal-detectron2"}
    assert any("extra == \"detection\"" in r and "pycocotools" in r for r in requires)


def test_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    """Installed into a plain folder, the CLI finds every stage and its shipped configs."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel], check=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import objcrop, objcrop.config as c; assert objcrop.__file__.startswith(%r), objcrop.__file__; "
            "print(c.packaged_config('pretrain/demo.yaml'))" % str(target))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target))
    doctor = subprocess.run([sys.executable, "-m", "objcrop", "doctor", "--pretrain-only"], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for stage in ("pretrain", "probe", "convert", "detect", "report"):
        helped = subprocess.run([sys.executable, "-m", "objcrop", stage, "--help"], env=env, cwd=str(tmp_path),
                                capture_output=True, text=True)
        assert helped.returncode == 0 and "usage" in helped.stdout, (stage, helped.stderr)


def test_a_stage_without_its_user_package_stops_with_one_line(tmp_path):
    """`objcrop detect` where detectron2 cannot be imported: one line naming it, exit 2, no traceback."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['detectron2'] = None\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "objcrop", "detect", "train"], env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("objcrop detect: error: objcrop needs detectron2 >= 0.6")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
