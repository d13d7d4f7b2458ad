"""`objcrop detect train` end to end on CPU: real detectron2 training, checkpoints, resume and evaluation.

Tiny on purpose (the embedded dataset's 96-px images, one image per batch, a
handful of iterations): these runs prove the plumbing, not the numbers.
"""
import json
import math
import os
import pickle

import pytest
import torch
import torchvision
import yaml

from objcrop.cli import run_stage_main
from objcrop.detection.cli import main
from objcrop.io import sha256_file
from objcrop.records import SCHEMA_VERSION, read_results

FAST = ["SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(2,)",
        "DATALOADER.NUM_WORKERS", "0", "TEST.DETECTIONS_PER_IMAGE", "10",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        # New layers' BN statistics after 3 steps are mostly their init (momentum 0.1); PreciseBN
        # recomputes them at the end, as the full protocol does.
        "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "2"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A converted random ResNet-50 with a pretrain block, as `objcrop convert` writes it."""
    from objcrop.convert.cli import convert

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    # Give BN running statistics that match its activations (as any trained backbone has):
    # a fresh ResNet's mean 0 / var 1 blow features up in eval mode, leaving the RPN no proposals.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64) * 2 - 1)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    pretrain = {"method": "moco_v2", "policy": "obj-obj-dilate", "proposals": "gt", "epochs": 1, "arch": "resnet50",
                "dataset": "synth:test:train", "seed": 0}
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet50", "backbone": backbone, "pretrain": pretrain},
               d / "model_final.pth")
    convert(str(d / "model_final.pth"), str(d / "w.pkl"), verify=False)  # the run itself checks the backbone loaded
    return str(d / "w.pkl")


def _run(argv):
    return run_stage_main(main, argv, "objcrop detect")


def _results(run_dir):
    """The run's results.json, validated against objcrop.records' schema."""
    record = read_results(os.path.join(run_dir, "results.json"))
    assert record["schema"] == SCHEMA_VERSION
    return record


def _finite_triplet(block):
    return block is not None and all(isinstance(block[k], float) and math.isfinite(block[k]) for k in ("AP", "AP50", "AP75"))


def _another_training(weights, stem):
    """The checkpoint `weights` was converted from with one tensor changed (another training), converted to
    STEM.pkl (from STEM.pth)."""
    from objcrop.convert.cli import convert

    checkpoint = torch.load(os.path.join(os.path.dirname(weights), "model_final.pth"), weights_only=True)
    checkpoint["backbone"]["conv1.weight"] = checkpoint["backbone"]["conv1.weight"] * 1.01
    torch.save(checkpoint, stem + ".pth")
    convert(stem + ".pth", stem + ".pkl", verify=False)
    return stem + ".pkl"


def test_voc_format_demo_trains_checkpoints_resumes_and_evaluates(synth_dir, weights, tmp_path, capsys):
    out = str(tmp_path / "voc")
    common = ["train", "--config-file", "demo/faster_rcnn_R_50_C4_voc.yaml", "--weights", weights, "--seeds", "0",
              "--output-dir", out, "--dataset-train", f"voc:{synth_dir}/voc:train",
              "--dataset-test", f"voc:{synth_dir}/voc:test"]
    assert _run(common + ["--opts", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2"] + FAST) == 0
    run = os.path.join(out, "seed0")
    r = _results(run)
    assert r["stage"] == "detection" and r["status"] == "ok" and r["task"] == "voc_det"
    assert r["dataset"] == f"voc:{synth_dir}/voc:test" and r["seed"] == 0 and r["iterations"] == 4
    assert _finite_triplet(r["box"]) and "mask" not in r
    assert r["weights_sha256"] == sha256_file(weights) and len(r["config_hash"]) == 12 and r["wall_time_s"] > 0
    # the training it stands on, by the checkpoint the .pkl was converted from (the .pkl's hash names its folder too)
    assert r["source_sha256"] == sha256_file(os.path.join(os.path.dirname(weights), "model_final.pth"))
    with open(weights, "rb") as f:
        assert r["pretrain"] == pickle.load(f)["__objcrop__"]

    # The SyncBN config ran on one process as BN; the run directory holds what the contract lists.
    with open(os.path.join(run, "config.yaml")) as f:
        config_text = f.read()
    assert "NORM: BN" in config_text and "SyncBN" not in config_text
    solver = yaml.safe_load(config_text)["SOLVER"]  # the schedule results.json says is the one the run used
    assert r["schedule"] == {"base_lr": solver["BASE_LR"], "steps": solver["STEPS"], "warmup_iters": solver["WARMUP_ITERS"]}
    assert r["schedule"]["steps"] == [2] and r["schedule"]["warmup_iters"] == 1  # FAST's, not the config file's
    assert {"model_final.pth", "last_checkpoint", "metrics.jsonl", "log.txt"} <= set(os.listdir(run))
    # The periodic checkpoint (iteration 2 of 4) was written, then removed once the run finished.
    assert not [n for n in os.listdir(run) if n.startswith("model_0")]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert lines[-1]["iteration"] == 4 and math.isfinite(lines[-1]["loss"]) and "lr" in lines[-1]
    with open(os.path.join(run, "log.txt")) as f:
        log = f.read()
    assert "SyncBN -> BN" in log and "all 265 backbone tensors identical" in log
    assert "Saving checkpoint to" in log and "model_0000001.pth" in log and "removed intermediate checkpoints" in log

    # --resume continues from the last checkpoint when the run is not finished.
    os.remove(os.path.join(run, "results.json"))
    assert _run(common + ["--resume", "--opts", "SOLVER.MAX_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "100"] + FAST) == 0
    r = _results(run)
    assert r["iterations"] == 5 and _finite_triplet(r["box"])
    with open(os.path.join(run, "log.txt")) as f:
        assert "resumed from" in f.read()

    # --resume keeps a finished run only while it is a fine-tuning of these weights' training
    other = _another_training(weights, str(tmp_path / "other"))
    assert _run([other if a == weights else a for a in common] + ["--resume", "--opts"] + FAST) != 0
    assert "a finished fine-tuning of another training" in capsys.readouterr().err
    assert _results(run)["iterations"] == 5 and _results(run)["source_sha256"] != sha256_file(other.replace(".pkl", ".pth"))
    os.remove(os.path.join(run, "results.json"))  # unfinished: its checkpoint names the training it fine-tunes
    assert _run([other if a == weights else a for a in common] + ["--resume", "--opts"] + FAST) != 0
    assert "model_final.pth: a checkpoint of a fine-tuning of another training" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(run, "results.json"))

    # --eval-only evaluates the fine-tuned checkpoint of the seed.
    assert _run(common + ["--eval-only", "--opts"] + FAST) == 0
    r = _results(run)
    assert r["iterations"] == 5 and _finite_triplet(r["box"])


def test_coco_format_demo_reports_box_and_mask_ap(synth_dir, weights, tmp_path, monkeypatch):
    # Evaluate as a detectron2 build without compiled ops would: pycocotools' COCOeval.
    import objcrop.detection.trainer as trainer

    monkeypatch.setattr(trainer, "compiled_coco_eval_available", lambda: False)
    out = str(tmp_path / "coco")
    assert _run(["train", "--config-file", "demo/mask_rcnn_R_50_FPN_coco.yaml", "--weights", weights,
                 "--seeds", "1", "--output-dir", out, "--dataset-train", f"synth:{synth_dir}:train",
                 "--dataset-test", f"synth:{synth_dir}:test", "--opts", "SOLVER.MAX_ITER", "3"] + FAST) == 0
    r = _results(os.path.join(out, "seed1"))
    assert r["status"] == "ok" and r["task"] == "coco_instseg" and r["seed"] == 1 and r["iterations"] == 3
    assert _finite_triplet(r["box"]) and _finite_triplet(r["mask"])
    assert r["dataset"] == f"synth:{synth_dir}:test"


def test_a_detectron2_without_compiled_ops_still_builds_models_and_evaluators(synth_dir):
    """With `detectron2._C` unimportable, objcrop falls back instead of failing (run in a fresh interpreter)."""
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["detectron2._C"] = None  # import of the compiled extension now fails
from objcrop.detection.trainer import build_evaluator_for, compiled_coco_eval_available
from objcrop.detection.datasets import register
from objcrop.convert.detectron2_model import load_config
from objcrop.convert.verify import build_model_for_verification
assert not compiled_coco_eval_available()
cfg = load_config("demo/mask_rcnn_R_50_FPN_coco.yaml")
evaluator = build_evaluator_for(cfg, register("synth:{synth_dir}:val"), output_folder="{synth_dir}/../eval_noc")
assert evaluator._use_fast_impl is False
build_model_for_verification("demo/mask_rcnn_R_50_FPN_coco.yaml")
print("fallback ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fallback ok" in done.stdout
