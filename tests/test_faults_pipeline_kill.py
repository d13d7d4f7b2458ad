"""kill -9 of the whole pipeline at random points (issue 21 §3), with every stage real.

The real `objcrop pipeline` runs a small preset (data → proposals → pretraining, a ResNet-18 at 32 px,
4 iterations with a checkpoint after each) once uninterrupted, and once more in the same folder
where its whole process group is SIGKILLed at seeded random moments (each drawn over what is left
of the run, timed by the uninterrupted run's tasks), rerun after each kill, and finally rerun to the
end. The later stages are left out to keep it near a minute; each stage's own kill is tried on its own.

After every kill: no partial file under a final name (every json and yaml parses, every results.json
says ok, every checkpoint matches its sha256 sidecar, model_final.pth loads). At the end: the killed
folder's outputs equal the uninterrupted run's, file by file (json and pretraining's metrics.jsonl
without their timings; every tensor and value of the checkpoints; other files' bytes), no temporary
file is left, and every rerun that found the killed run's lock said in one line that it took it over.

OBJCROP_FAULT_KILLS (default 2) and OBJCROP_FAULT_SEED (default 0) set how many kills and where;
e.g. `OBJCROP_FAULT_KILLS=6 OBJCROP_FAULT_SEED=1 pytest tests/test_faults_pipeline_kill.py -s`
for a longer run. The kill times and the task each one hit are printed.
"""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from objcrop.pipeline.lock import LOCK_NAME

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = int(os.environ.get("OBJCROP_FAULT_KILLS", "2"))
SEED = int(os.environ.get("OBJCROP_FAULT_SEED", "0"))
PRESET = """\
data:
  dir: "{out}/data"
  synth: {num_images: 16, seed: 0, variant: default, args: [--no-progress]}
datasets:
  pretrain: "synth:{data}:train"
  probe_train: "synth:{data}:train"
  probe_test: "synth:{data}:test"
proposals:
  methods: [gt]
  dataset: "synth:{data}:train"
pretrain:
  config_file: pretrain/demo.yaml
  methods: [moco_v2]
  policies: [obj-obj-dilate]
  seeds: [0]
  opts: [PRETRAIN.ARCH, resnet18, PRETRAIN.EPOCHS, 2, PRETRAIN.BATCH_SIZE, 4, PRETRAIN.MOCO.K, 16, VIEWS.CROP_SIZE, 32,
         DATA.NUM_WORKERS, 0, CHECKPOINT.PERIOD, 1]
gpus: 0
"""
# what differs between two uninterrupted runs: the logs, and the clock
NOT_COMPARED = re.compile(r"(^logs/|/log\.txt$|/events\.out\.tfevents\.|^\.objcrop-pipeline\.lock$)")
TIMING_KEYS = re.compile(r"(_time_s|_per_s|throughput)$")
# hashes of a .pth file's bytes, which hold the name of the temporary file torch.save wrote (its zip
# archive's folder is named after the file): compared through the .pth files' contents instead
BYTE_HASHES = re.compile(r"(\.sha256$|^weights_id$)")


def _command(preset, out):
    return [sys.executable, "-m", "objcrop.pipeline", "--preset", str(preset), "--out", str(out),
            "--stages", "data proposals pretrain"]


def _run_to_the_end(preset, out):
    r = subprocess.run(_command(preset, out), capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _run_and_kill(preset, out, delay, log):
    """Start the pipeline in its own process group and SIGKILL the group after `delay` s (unless it ended)."""
    proc = subprocess.Popen(_command(preset, out), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False  # it finished first
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_until_gone(proc.pid)
        return True


def _wait_until_gone(group, timeout=30.0):
    """The stages die with the group; wait until none is left that could still write."""
    end = time.time() + timeout
    while time.time() < end:
        members = [p for p in os.listdir("/proc") if p.isdigit() and _group_of(p) == group and not _zombie(p)]
        if not members:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {group} still alive {timeout} s after SIGKILL")


def _group_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _task_seconds(out):
    """task -> seconds it took, from the pipeline log's `done TASK in N s` lines."""
    log = os.path.join(out, "logs", "pipeline.log")
    done = re.findall(r"\] done (\S+) in (\d+) s", open(log).read()) if os.path.exists(log) else []
    return {task: float(seconds) for task, seconds in done}


def _seconds_left(reference_seconds, out, startup):
    """How long the rerun in `out` should take: startup, and every task it has not finished yet."""
    finished = _task_seconds(out)
    return startup + sum(s for task, s in reference_seconds.items() if task not in finished)


def _task_running_at_kill(out):
    """The task the kill hit: the last one the pipeline log started without finishing ('' if none)."""
    started, finished = [], set()
    log = os.path.join(out, "logs", "pipeline.log")
    for line in open(log).read().splitlines() if os.path.exists(log) else []:
        if "] run " in line:
            started.append(line.split("] run ", 1)[1].split(":")[0])
        elif "] done " in line:
            finished.add(line.split("] done ", 1)[1].split(" in ")[0])
    running = [t for t in started if t not in finished]
    return running[-1] if running else ("(after the last task)" if started else "(before the first task)")


def _files(out):
    """Every file under `out`, relative, except those never compared."""
    found = []
    for directory, _, names in os.walk(out):
        for name in names:
            rel = os.path.relpath(os.path.join(directory, name), out)
            if not NOT_COMPARED.search(rel):
                found.append(rel)
    return sorted(found)


def _is_temporary(rel):
    """A writer's temporary file or folder (.NAME.<...>.tmp), or something inside one."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in rel.split(os.sep))


def _assert_no_partial_file(out):
    """Whatever a kill left under a final name is whole."""
    import torch

    for rel in _files(out):
        path = os.path.join(out, rel)
        if _is_temporary(rel):
            continue
        if rel.endswith(".json"):
            data = json.load(open(path))  # raises on a truncated file
            if rel.endswith("results.json"):
                assert data["status"] == "ok", rel
        elif rel.endswith((".yaml", ".yml")):
            yaml.safe_load(open(path))
        elif rel.endswith(".sha256"):
            target = path[: -len(".sha256")]
            assert os.path.exists(target), rel
            assert hashlib.sha256(open(target, "rb").read()).hexdigest() == open(path).read().strip(), rel
        elif rel.endswith("model_final.pth"):
            torch.load(path, map_location="cpu", weights_only=False)


def _fingerprint(out):
    """The deterministic content of every output file: json without its timings, checkpoints' contents
    (tensors and values), other files' bytes."""
    import torch

    prints = {}
    for rel in _files(out):
        path = os.path.join(out, rel)
        if BYTE_HASHES.search(rel):
            continue
        if rel.endswith(".json"):
            prints[rel] = _without_timings(json.load(open(path)))
        elif rel.endswith(".jsonl"):
            prints[rel] = [_without_timings(json.loads(line)) for line in open(path)]
        elif rel.endswith(".pth"):
            prints[rel] = _tensor_digest(torch.load(path, map_location="cpu", weights_only=False))
        else:
            prints[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return prints


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if not (TIMING_KEYS.search(k) or BYTE_HASHES.search(k))}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _tensor_digest(value):
    import torch

    if isinstance(value, torch.Tensor):
        return hashlib.sha256(value.detach().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(value, dict):
        return {str(k): _tensor_digest(v) for k, v in value.items() if not TIMING_KEYS.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_tensor_digest(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


@pytest.mark.timeout(1200)
def test_pipeline_killed_at_random_points_leaves_no_partial_file_and_resumes_to_the_same_outputs(tmp_path):
    preset = tmp_path / "kill.yaml"
    preset.write_text(PRESET)
    # both runs write the same folder (the reference is moved aside), so that the outputs naming it,
    # and the hashes over them (config_hash, weights_id, sha256 sidecars), can be compared byte for byte
    out, reference = tmp_path / "run", tmp_path / "uninterrupted"
    start = time.time()
    _run_to_the_end(preset, out)
    span = time.time() - start
    reference_seconds = _task_seconds(out)
    startup = max(1.0, span - sum(reference_seconds.values()))
    os.rename(out, reference)

    rng = random.Random(SEED)
    hits, lock_left = [], False
    for i in range(KILLS):
        delay = rng.uniform(0.5, _seconds_left(reference_seconds, out, startup))
        with open(tmp_path / f"killed_{i}.out", "w") as log:
            killed = _run_and_kill(preset, out, delay, log)
        _assert_took_over_once_if_left(lock_left, (tmp_path / f"killed_{i}.out").read_text())
        hits.append((delay, _task_running_at_kill(out) if killed else "(none: the run had ended)"))
        _assert_no_partial_file(out)
        lock_left = os.path.exists(out / LOCK_NAME)
    print(f"\nkill -9 of the pipeline (seed {SEED}, uninterrupted run {span:.0f} s): "
          + "; ".join(f"at {d:.1f} s during {task}" for d, task in hits))

    _assert_took_over_once_if_left(lock_left, _run_to_the_end(preset, out))
    assert not os.path.exists(out / LOCK_NAME)
    assert not [rel for rel in _files(out) if _is_temporary(rel)], "temporary files left behind"
    _assert_no_partial_file(out)
    got, want = _fingerprint(out), _fingerprint(reference)
    assert sorted(got) == sorted(want)
    differing = [rel for rel in want if got[rel] != want[rel]]
    assert not differing, f"outputs differ from the uninterrupted run's: {differing}"


def _assert_took_over_once_if_left(lock_left, output):
    """A run that got past taking the lock (it planned) took the killed run's lock over, in one line."""
    if lock_left and " tasks, launcher " in output:
        assert len([line for line in output.splitlines() if "took over the stale lock" in line]) == 1, output
