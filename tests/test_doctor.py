"""`objcrop doctor` on this environment, and with pieces made unimportable through Python's import system."""
import json
import os
import sys

from objcrop.doctor import main


def test_doctor_is_green_here_and_reports_each_piece(capsys, tmp_path, monkeypatch, synth_dir):
    os.symlink(synth_dir, tmp_path / "objcrop_synth")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert main(["--json", str(tmp_path / "doctor.json")]) == 0
    out = capsys.readouterr().out
    for piece in ("python", "torch", "torchvision", "detectron2", "detectron2 ops", "opencv", "cuda", "dataset root"):
        assert f" {piece} " in out
    assert "compiled detectron2._C loads" in out
    assert "ximgproc.segmentation yes, saliency yes" in out
    assert "found objcrop_synth_train, objcrop_synth_val, objcrop_synth_test" in out
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["ok"] and {c["component"] for c in report["checks"]} >= {"torch", "detectron2", "opencv"}


def test_missing_detectron2_fails_with_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # makes `import detectron2` raise ImportError
    assert main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("objcrop doctor: missing: detectron2: objcrop needs detectron2 >= 0.6, "
                                               "which does not import (")
    # Pretraining and the probe do not need detectron2.
    assert main(["--pretrain-only"]) == 0


def test_missing_compiled_ops_is_a_reported_fallback_not_a_failure(capsys, monkeypatch):
    import detectron2  # noqa: F401

    monkeypatch.setitem(sys.modules, "detectron2._C", None)
    assert main([]) == 0
    assert "falling back to torchvision" in capsys.readouterr().out


def test_require_cuda_fails_on_a_cpu_machine(capsys):
    import torch

    rc = main(["--require-cuda"])
    assert rc == (0 if torch.cuda.is_available() else 1)
