"""scripts/same_training.py: a pretraining run trained again (a registered run whose checkpoint was not
kept, docs/preregistration.md, detection) is checked bit for bit against the recorded run's losses."""
import math
import os
import subprocess
import sys

from objcrop.io import append_jsonl, write_text_atomic
from objcrop.records import Provenance, results, write_results
from objcrop.report.record import StudyRecord

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "same_training.py")
NAME = "moco_v2_random_none_r18_b32_e3_d-train_s0"
LOSSES = [6.931471824645996, 6.2876, 5.91, 5.4]


def _run_dir(out, losses, resumed_at=None):
    """runs/pretrain/NAME as objcrop pretrain leaves it; `resumed_at`: the iterations after it logged twice."""
    pre = os.path.join(out, "runs", "pretrain", NAME)
    write_results(pre, results("pretrain", "ok", Provenance("moco_v2", "random", "none", 3, "resnet18",
                                                             "synth:/d:train", 0), iterations=len(losses)))
    write_text_atomic(os.path.join(pre, "config.yaml"), "PRETRAIN:\n  BATCH_SIZE: 32\n")
    steps = list(enumerate(losses, 1))
    if resumed_at is not None:  # a killed run logs past its checkpoint, then again after --resume
        steps = steps[:resumed_at + 1] + [(i, loss + 1.0) for i, loss in steps[resumed_at:resumed_at + 1]] + steps[resumed_at:]
    for i, loss in steps:
        append_jsonl(os.path.join(pre, "metrics.jsonl"), {"iteration": i, "epoch": 0, "loss": loss, "lr": 0.1})
    return pre


def _check(record, *run_dirs):
    return subprocess.run([sys.executable, SCRIPT, record, *run_dirs], capture_output=True, text=True, timeout=60)


def _record(tmp_path):
    record = str(tmp_path / "record")
    _run_dir(str(tmp_path / "first"), LOSSES)
    StudyRecord.open(record).save_output(str(tmp_path / "first"))
    return record


def test_the_same_training_passes_over_the_iterations_it_has_so_far(tmp_path):
    record = _record(tmp_path)
    again = _run_dir(str(tmp_path / "again"), LOSSES)
    r = _check(record, again)
    assert r.returncode == 0 and f"{NAME}: same: 4 of 4 recorded iterations identical" in r.stdout
    # still training (its first two iterations), and resumed once (the later log line of an iteration counts)
    assert "same: 2 of 4" in _check(record, _run_dir(str(tmp_path / "early"), LOSSES[:2])).stdout
    assert _check(record, _run_dir(str(tmp_path / "resumed"), LOSSES, resumed_at=2)).returncode == 0
    # caught mid-write: the torn last line of a run still training is not an error
    torn = _run_dir(str(tmp_path / "torn"), LOSSES[:3])
    with open(os.path.join(torn, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"iteration": 4, "epo')
    r = _check(record, torn)
    assert r.returncode == 0 and "same: 3 of 4" in r.stdout, r.stderr


def test_one_loss_that_differs_in_its_last_bit_fails_and_names_the_iteration(tmp_path):
    record = _record(tmp_path)
    other = LOSSES[:2] + [math.nextafter(LOSSES[2], math.inf)] + LOSSES[3:]  # the next float up
    r = _check(record, _run_dir(str(tmp_path / "again"), other))
    assert r.returncode == 1 and f"{NAME}: differs at iteration 3" in r.stdout


def test_a_run_the_record_does_not_hold_is_named(tmp_path):
    record = _record(tmp_path)
    r = _check(record, str(tmp_path / "again" / "runs" / "pretrain" / "elsewhere"))
    assert r.returncode == 2 and "elsewhere/metrics.jsonl: no such file" in r.stderr
    os.makedirs(str(tmp_path / "x" / "other_s1"))
    append_jsonl(str(tmp_path / "x" / "other_s1" / "metrics.jsonl"), {"iteration": 1, "loss": 1.0})
    r = _check(record, str(tmp_path / "x" / "other_s1"))
    assert r.returncode == 2 and "holds no logged losses of runs/pretrain/other_s1" in r.stderr


def test_the_verdicts_are_kept_for_the_record_and_the_page_names_each_second_training(tmp_path):
    """--json OUT/extras/second_trainings_<OUT>.json (merged over calls) is recorded with the fine-tunings
    (`report record --runs`), one file per output folder, and the study page's registered section names
    every second training of every folder."""
    import json

    from objcrop.report import prereg

    record = _record(tmp_path)
    _named(tmp_path / "first_other", "other_s1", LOSSES)
    StudyRecord.open(record).save_output(str(tmp_path / "first_other"))
    out = tmp_path / "again"
    verdicts = str(out / "extras" / "second_trainings_again.json")
    assert _check(record, _run_dir(str(out), LOSSES), "--json", verdicts).returncode == 0
    other = LOSSES[:1] + [LOSSES[1] + 1e-6] + LOSSES[2:]
    assert _check(record, _named(out, "other_s1", other), "--json", verdicts).returncode == 1  # a second call: merged
    with open(verdicts) as f:
        kept = json.load(f)
    assert kept[NAME] == {"same": True, "common": 4, "recorded": 4, "first_difference": None}
    assert kept["other_s1"] == {"same": False, "common": 4, "recorded": 4, "first_difference": 2}
    StudyRecord.open(record).save_output(str(out), ["runs/detect_voc/*/*"])
    later = tmp_path / "later"  # another folder's verdicts, recorded after: both stay
    assert _check(record, _named(later, "other_s1", LOSSES), "--json",
                  str(later / "extras" / "second_trainings_later.json")).returncode == 0
    StudyRecord.open(record).save_output(str(later), ["runs/detect_voc/*/*"])
    kept = prereg.second_trainings(StudyRecord.open(record))
    assert kept[NAME]["same"] and kept["other_s1"]["same"]
    line = prereg.second_trainings_line({"study": {NAME: kept[NAME], "other_s1": {**kept["other_s1"], "same": False,
                                                                                  "first_difference": 2}}})
    assert line.startswith("**Trained again for their fine-tuning only**")
    assert f"study `{NAME}` (the same losses over 4 of 4 iterations)" in line
    assert "study `other_s1` (losses differ from iteration 2 on: another training of the same seed and settings)" in line
    assert prereg.second_trainings_line({"study": {}}) == ""


def _named(out, name, losses):
    """OUT/runs/pretrain/<name> with these losses (the record keys runs by their folder's name)."""
    pre = os.path.join(str(out), "runs", "pretrain", name)
    write_results(pre, results("pretrain", "ok", Provenance("moco_v2", "random", "none", 3, "resnet18",
                                                             "synth:/d:train", 1), iterations=len(losses)))
    for i, loss in enumerate(losses, 1):
        append_jsonl(os.path.join(pre, "metrics.jsonl"), {"iteration": i, "epoch": 0, "loss": loss})
    return pre
