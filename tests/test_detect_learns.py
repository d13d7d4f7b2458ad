"""`objcrop detect train` learns: a fixed-seed fine-tune on a single-object toy beats the same model untrained.

The other detection tests prove the plumbing (a finite AP, checkpoints, resume). This one would fail on a
training path that runs without learning: an optimiser that never steps, a learning rate lost on the way to
the solver, boxes or labels misread from the dataset. The toy is the embedded generator's `study-plain`
variant (one flat grey background, no clutter) reduced to one big square per 64-px image and one class, so
that the study's R18-FPN from random init finds it within a few seconds of CPU training.
"""
import dataclasses
import json
import os

import pytest

from objcrop.cli import run_stage_main
from objcrop.datasets import synth
from objcrop.detection.cli import main

TOY = "study-plain-one-square"
ITERATIONS = 15
# Sized for one CPU core: 64-px images, batch 2, no conv layers in the box head, a narrower FPN,
# one test size, two precise-BN batches. Untrained and trained runs share all of it.
CPU_OPTS = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.02", "SOLVER.WARMUP_ITERS", "5",
            "SOLVER.STEPS", "(1000,)", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MIN_SIZE_TEST", "64", "MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.FPN.OUT_CHANNELS", "64",
            "TEST.PRECISE_BN.NUM_ITER", "2"]


@pytest.fixture
def toy_dir(tmp_path, monkeypatch):
    """16 training and 8 test images of one square (40-60 % of the side) on study-plain's flat grey."""
    one_square = dataclasses.replace(synth.VARIANTS["study-plain"], image_size=64, min_objects=1, max_objects=1,
                                     object_scale=(0.4, 0.6), classes=("square",))
    monkeypatch.setitem(synth.VARIANTS, TOY, one_square)
    out = str(tmp_path / "toy")
    synth.generate(out, num_images=24, seed=0, variant=TOY, splits=(2 / 3, 0.0, 1 / 3), progress=False, workers=1)
    return out


def _box_ap(toy_dir: str, out_dir: str, extra_args, iterations: int) -> dict:
    argv = ["train", "--config-file", "study/faster_rcnn_R_18_FPN_voc.yaml", "--weights", "none", "--seeds", "0",
            "--output-dir", out_dir, "--dataset-train", f"synth:{toy_dir}:train",
            "--dataset-test", f"synth:{toy_dir}:test", *extra_args,
            "--opts", "SOLVER.MAX_ITER", str(iterations), *CPU_OPTS]
    assert run_stage_main(main, argv, "objcrop detect") == 0
    with open(os.path.join(out_dir, "seed0", "results.json")) as f:
        return json.load(f)["box"]


def test_a_short_fine_tune_finds_the_single_object_toy(toy_dir, tmp_path, one_torch_thread):
    """Guards against a detection fine-tune that runs but does not learn (no optimiser step, lr 0, boxes or
    classes misread). The floor is measured, not typed in: the same config and seed evaluated untrained
    (--eval-only, 0 iterations). The trained model must beat it by more than one test object's worth of AP50
    (100 / the number of test objects), i.e. by more than a lucky hit on a single image."""
    untrained = _box_ap(toy_dir, str(tmp_path / "untrained"), ["--eval-only"], iterations=0)
    trained = _box_ap(toy_dir, str(tmp_path / "trained"), [], iterations=ITERATIONS)
    with open(os.path.join(toy_dir, "annotations", "instances_test.json")) as f:
        test_objects = len(json.load(f)["annotations"])
    one_object = 100.0 / test_objects
    assert trained["AP50"] > untrained["AP50"] + one_object, (trained, untrained, test_objects)
