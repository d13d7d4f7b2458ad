"""benchmarks/detect_curve.py's reading of detectron2's evaluations and issue 17's gate (no training here)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import detect_curve  # noqa: E402


def _metrics(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def test_read_curve_labels_evaluations_by_iterations_run(tmp_path):
    # detectron2's EvalHook: periodic evaluations at 0-based iteration k*period-1, the last after training
    # at iteration max_iter; training scalars in between; a resumed run repeats an iteration (last wins).
    _metrics(tmp_path / "metrics.json", [
        {"iteration": 19, "loss_cls": 1.0},
        {"iteration": 124, "bbox/AP": 1.0, "bbox/AP50": 4.0, "segm/AP": 0.5, "segm/AP50": 2.0},
        {"iteration": 249, "bbox/AP": 2.0, "bbox/AP50": 8.0},
        {"iteration": 249, "bbox/AP": 3.0, "bbox/AP50": 9.0},
        {"iteration": 500, "bbox/AP": 5.0, "bbox/AP50": 20.0},
    ])
    assert detect_curve.read_curve(str(tmp_path), "box", 500) == {125: (1.0, 4.0), 250: (3.0, 9.0), 500: (5.0, 20.0)}
    assert detect_curve.read_curve(str(tmp_path), "mask", 500) == {125: (0.5, 2.0)}
    assert detect_curve.read_curve(str(tmp_path / "missing"), "box", 500) == {}


def _summary(scratch, supervised, it=500):
    rows = [{"task": "voc", "kind": "box", "init": init, "seed": s, "iteration": it, "AP": v / 2, "AP50": v}
            for init, values in (("scratch", scratch), ("supervised", supervised)) for s, v in enumerate(values)]
    return detect_curve.summarise(rows)


def test_gate_passes_a_clear_gap_over_three_seeds():
    g = detect_curve.gate(_summary([10.0, 11.0, 12.0], [30.0, 31.0, 32.0]), "voc", "box", 500)
    assert g["ok"] and g["diff"] == pytest.approx(20.0)


@pytest.mark.parametrize("scratch, supervised, reason", [
    ([10.0, 11.0, 12.0], [18.0, 19.0, 20.0], "< 10"),             # 8 points: too small
    ([10.0, 20.0, 30.0], [35.0, 40.0, 45.0], "≤ 3 × larger std"),  # 20 points but std 10
    ([10.0, 11.0], [30.0, 31.0], "n = 2 < 3"),                     # too few seeds
    ([10.0], [30.0], "std undefined"),
])
def test_gate_fails_small_noisy_or_unreplicated_gaps(scratch, supervised, reason):
    g = detect_curve.gate(_summary(scratch, supervised), "voc", "box", 500)
    assert not g["ok"] and reason in g["why"]


def test_gate_fails_without_an_evaluation_at_the_budget():
    g = detect_curve.gate(_summary([10.0] * 3, [30.0] * 3, it=250), "voc", "box", 500)
    assert not g["ok"] and "no evaluation at iteration 500" in g["why"]


def test_the_demo_config_set_measures_the_demos_own_files_in_their_own_folders(tmp_path):
    """`--configs demo` fine-tunes eval_configs/demo/'s models (the demo's lighter box head), whose runs
    must not land in (or be skipped because of) the study configs' run folders of the same schedule."""
    study = detect_curve.parse_args(["--work", str(tmp_path), "--tasks", "voc"])
    demo = detect_curve.parse_args(["--work", str(tmp_path), "--tasks", "voc", "--configs", "demo"])
    assert detect_curve.task_config(study, "voc") == "study/faster_rcnn_R_18_FPN_voc.yaml"
    assert detect_curve.task_config(demo, "voc") == "demo/faster_rcnn_R_18_FPN_voc.yaml"
    assert detect_curve.run_dir(study, "voc", "scratch") != detect_curve.run_dir(demo, "voc", "scratch")
    for args in (study, demo):
        for task in detect_curve.TASKS:
            assert os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval_configs", detect_curve.task_config(args, task)))
