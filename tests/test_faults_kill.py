"""kill -9 at a random point in each stage (issue 21 §3): no partial file under its final name, and
a rerun (with --resume where the stage has it) ends with the outputs of an uninterrupted run.

Each test runs the real CLI in a subprocess on a tiny input, twice under the same path: first
uninterrupted (the reference, then moved aside), then SIGKILLed (the whole process group) at a
seeded random time, or a seeded random delay after a point it polls for. Then:

* every file under a final name is complete: it parses (json, jsonl lines, yaml, torch, pickle,
  PNG), and where the stage writes it deterministically it is byte-identical to the reference's
  (an atomic write leaves the old file or the new one, never a prefix);
* the killed writer's temporary files are all recognised and removed by the pipeline's cleaner
  (objcrop.io.remove_stale_temp_files); nothing else is left outside a final name;
* the rerun's files equal the reference's, except what records time: log.txt, results.json's
  wall_time_s, detectron2's metrics.json and event files, the `time`/`data_time` keys in
  metrics.jsonl, and the minute results.md says it was generated.

OBJCROP_KILL_RUNS=N (default 1) kills each stage at N seeded points (a longer mode for a bench).
pretrain: tests/test_pretrain_engine.py; proposals: tests/test_proposals_compute.py.
"""
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_RUNS = int(os.environ.get("OBJCROP_KILL_RUNS", "1"))
TIMED_KEYS = {"time", "data_time", "rank_data_time", "eta_seconds", "wall_time_s"}
TIMED_FILES = {"log.txt", "metrics.json"}  # detectron2's metrics.json holds times on every line
GENERATED_ON = re.compile(rb" on \d{4}-\d\d-\d\d \d\d:\d\d UTC")  # the report's results.md says when


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", OBJCROP_TESTING="1", PYTHONPATH=REPO)


def _objcrop(*args):
    return [sys.executable, "-m", "objcrop", *map(str, args)]


def _run(cmd, timeout=300):
    done = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def _kill(cmd, seconds, until=None, timeout=300, work=None, tries=4):
    """Start `cmd` (in a fresh `work` folder when given), wait until `until()` holds (when given), then
    `seconds` more; SIGKILL its process group. A run that ends first (the machine ran faster than during
    the reference) is started again with half the delay, so the test does not depend on the load."""
    for _ in range(tries):
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # each kill interrupts a run from its start
        proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + timeout
        while until is not None and not until() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        end = time.time() + seconds
        while proc.poll() is None and time.time() < end:
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        seconds /= 2
    raise AssertionError(f"the run ended before the kill {tries} times, the last delay {seconds * 2:.2f} s")


def _reference(cmd, work, tmp_path):
    """Run `cmd` uninterrupted in `work`, move its files to tmp_path/reference; (that folder, seconds taken)."""
    start = time.time()
    _run(cmd)
    seconds = time.time() - start
    reference = tmp_path / "reference"
    os.rename(work, reference)
    return reference, seconds


def _files(root):
    """{relative path: path} of every file below root."""
    out = {}
    for d, _, names in os.walk(root):
        for name in names:
            out[os.path.relpath(os.path.join(d, name), root)] = os.path.join(d, name)
    return out


def _parse(path):
    """Load a file by its kind; a truncated file raises."""
    name = os.path.basename(path)
    if name.endswith(".jsonl") or name == "metrics.json":  # detectron2's metrics.json is json lines
        with open(path) as f:
            text = f.read()
        # append-only: a kill can cut only the line being written (objcrop.io.append_jsonl)
        return [json.loads(line) for line in text.split("\n")[:-1]]
    if name.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    if name.endswith(".yaml"):
        with open(path) as f:
            return yaml.safe_load(f)
    if name.endswith((".pth", ".pt")):
        return torch.load(path, map_location="cpu")
    if name.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f)  # our own file, written by this test's run
    if name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    return None


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in TIMED_KEYS}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _same(path, reference_path):
    """Byte-identical, or, for json/jsonl, equal but for the keys that record time."""
    if path.endswith((".json", ".jsonl")):
        return _without_times(_parse(path)) == _without_times(_parse(reference_path))
    if path.endswith((".pth", ".pt")):
        return _same_tensors(_parse(path), _parse(reference_path))
    with open(path, "rb") as a, open(reference_path, "rb") as b:
        return GENERATED_ON.sub(b"", a.read()) == GENERATED_ON.sub(b"", b.read())


def _same_tensors(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _timed(rel):
    return os.path.basename(rel) in TIMED_FILES or os.path.basename(rel).startswith("events.out.tfevents")


def _assert_complete_after_kill(work, reference, transient=()):
    """Every final-named file parses; a deterministic one the reference also holds is identical to it
    (except `transient` files: rewritten during the run, e.g. metrics.jsonl, last_checkpoint). The killed
    writer's temporary files are named so that objcrop.io.remove_stale_temp_files (the pipeline's
    cleaner) removes them, and it is run first: whatever is left is under a final name."""
    from objcrop.io import remove_stale_temp_files

    remove_stale_temp_files(str(work))
    ref = _files(reference)
    for rel, path in _files(work).items():
        assert not os.path.basename(rel).startswith("."), f"{rel}: a leftover the temp-file cleaner does not know"
        _parse(path)
        if rel in ref and not _timed(rel) and os.path.basename(rel) not in transient:
            assert _same(path, ref[rel]), f"{rel}: differs from the uninterrupted run's after the kill"


def _assert_same_outputs(work, reference):
    """The rerun's files are the reference's (the same names; equal but for the time records)."""
    files, ref = [{rel: path for rel, path in _files(root).items() if not _timed(rel)}
                  for root in (work, reference)]
    assert set(files) == set(ref), (sorted(files), sorted(ref))
    for rel in ref:
        assert _same(files[rel], ref[rel]), f"{rel}: the rerun differs from the uninterrupted run"


def _kill_times(seconds, lo=0.3, hi=0.9):
    """KILL_RUNS seeded points in [lo, hi] of an uninterrupted run's duration."""
    rng = random.Random(21)
    return [rng.uniform(lo, hi) * seconds for _ in range(KILL_RUNS)]


# ----------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def objcrop_r18(tmp_path_factory):
    """A random ResNet-18 objcrop checkpoint (what `objcrop pretrain` writes)."""
    import torchvision

    path = tmp_path_factory.mktemp("r18") / "model_final.pth"
    torch.manual_seed(0)
    backbone = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
                if not k.startswith("fc.")}
    pretrain = {"method": "moco_v2", "policy": "obj-obj", "proposals": "gt", "epochs": 1, "arch": "resnet18",
                "dataset": "synth:test:train", "seed": 0}
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet18", "backbone": backbone, "pretrain": pretrain}, path)
    return str(path)


def _kill_and_rerun(cmd, work, reference, seconds, transient=()):
    """Kill `cmd` at each seeded moment of its reference run time, check what is left, rerun it, compare."""
    for at in _kill_times(seconds):
        _kill(cmd, at, work=work)
        _assert_complete_after_kill(work, reference, transient=transient)
        _run(cmd)
        _assert_same_outputs(work, reference)


def test_convert_killed_leaves_no_partial_pkl_and_the_rerun_writes_the_same_bytes(objcrop_r18, tmp_path):
    work = tmp_path / "work"
    cmd = _objcrop("convert", objcrop_r18, work / "r18.pkl")
    reference, seconds = _reference(cmd, work, tmp_path)
    _kill_and_rerun(cmd, work, reference, seconds)


def test_probe_killed_then_rerun_gives_the_uninterrupted_results(synth_dir, objcrop_r18, tmp_path):
    work = tmp_path / "work"
    cmd = _objcrop("probe", "--weights", objcrop_r18, "--dataset-train", f"synth:{synth_dir}:train",
                   "--dataset-test", f"synth:{synth_dir}:test", "--out", work / "run", "--cache-dir", work / "cache",
                   "--image-size", "32", "--epochs", "20", "--device", "cpu", "--num-workers", "0")
    reference, seconds = _reference(cmd, work, tmp_path)
    # metrics.jsonl is rewritten from its first line by every run (probe's _fresh_metrics); the probe
    # has no --resume: a rerun starts over, reusing the feature cache
    _kill_and_rerun(cmd, work, reference, seconds, transient={"metrics.jsonl"})


def test_report_killed_leaves_only_complete_tables_and_the_rerun_is_identical(tmp_path):
    work = tmp_path / "work"
    cmd = _objcrop("report", os.path.join(REPO, "docs", "results", "study"), "--out", work)
    reference, seconds = _reference(cmd, work, tmp_path)
    _kill_and_rerun(cmd, work, reference, seconds)


DETECT_OPTS = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "1",
               "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(4,)", "DATALOADER.NUM_WORKERS", "0",
               "TEST.DETECTIONS_PER_IMAGE", "10", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
               "OBJCROP.METRICS_PERIOD", "1", "TEST.PRECISE_BN.ENABLED", "False"]


def test_detect_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(synth_dir, tmp_path):
    work = tmp_path / "work"
    cmd = _objcrop("detect", "train", "--config-file", "demo/faster_rcnn_R_18_FPN_voc.yaml", "--weights", "none",
                   "--output-dir", work, "--dataset-train", f"voc:{synth_dir}/voc:train",
                   "--dataset-test", f"voc:{synth_dir}/voc:test")
    reference, _ = _reference(cmd + ["--opts"] + DETECT_OPTS, work, tmp_path)
    last_checkpoint = work / "seed0" / "last_checkpoint"
    rng = random.Random(21)
    for _ in range(KILL_RUNS):
        # the first checkpoint (iteration 2 of 6) is written; then a random moment of the next steps,
        # another checkpoint's write included
        _kill(cmd + ["--opts"] + DETECT_OPTS, rng.uniform(0.0, 0.6), until=last_checkpoint.exists,
              work=work)
        _assert_complete_after_kill(work, reference, transient={"metrics.jsonl", "last_checkpoint"})
        assert not (work / "seed0" / "results.json").exists()
        _run(cmd + ["--resume", "--opts"] + DETECT_OPTS)
        with open(work / "seed0" / "log.txt") as f:
            assert "resumed from" in f.read()
        # detectron2's metrics.json and event files record times (left out); metrics.jsonl's losses,
        # the final weights and results.json (AP) must be the reference's
        _assert_same_outputs(work, reference)
