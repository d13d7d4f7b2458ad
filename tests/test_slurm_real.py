"""`--launcher slurm` against a real single-node SLURM (scripts/slurm_cluster.sh), not stand-ins.

One cluster per session, in a temporary folder, stopped in the fixture's teardown (also when a test
fails). Every pipeline run goes through the product's entry point, `bash scripts/run_pipeline.sh`;
the two-process check also starts the pretraining with srun itself (the launcher cannot, see there).
Skipped with the reason where SLURM cannot start (not root, packages missing); `.ci/run` installs the
packages and sets OBJCROP_REQUIRE_SLURM=1, which turns that skip into a failure.

Runs use one thread per process (OMP_NUM_THREADS=1), so a result computed in a SLURM job and the same
computation run here add their floats in the same order: equal to the last bit, not merely close.
"""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = os.path.join(REPO, "scripts", "run_pipeline.sh")
CLUSTER = os.path.join(REPO, "scripts", "slurm_cluster.sh")
TINY = os.path.join(REPO, "eval_configs", "pipeline", "tiny.yaml")
COMMANDS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "srun", "sbatch", "sacct", "squeue", "scancel"]
# per-iteration numbers that depend on the clock, not on the computation
TIMING_KEYS = {"images_per_s", "throughput", "train_time_s", "wall_time_s", "data_time", "time"}


def _unavailable(reason: str):
    if os.environ.get("OBJCROP_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (OBJCROP_REQUIRE_SLURM=1: these tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The environment of a running single-node cluster (SLURM_CONF set); stopped after the session."""
    if os.geteuid() != 0:
        _unavailable("a single-node SLURM runs munged, slurmctld and slurmd as root; this user is not root")
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [c for c in COMMANDS if shutil.which(c, path=path) is None]
    if missing:
        _unavailable(f"SLURM is not installed (missing {' '.join(missing)}); "
                     f"`bash scripts/slurm_cluster.sh --install start DIR` or .ci/run installs it")
    folder = str(tmp_path_factory.mktemp("slurm_cluster"))
    try:
        r = subprocess.run(["bash", CLUSTER, "start", folder], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            _unavailable(f"the single-node SLURM did not start: {r.stderr.strip()}")
        env = dict(os.environ, SLURM_CONF=os.path.join(folder, "etc", "slurm.conf"), PYTHON=sys.executable,
                   OMP_NUM_THREADS="1", PATH=os.pathsep.join([os.path.dirname(sys.executable), path]))
        yield env
    finally:
        subprocess.run(["bash", CLUSTER, "stop", folder], capture_output=True, text=True, timeout=300)
    status = subprocess.run(["bash", CLUSTER, "status", folder], capture_output=True, text=True)
    assert status.returncode == 3, "daemons left running after stop:\n" + status.stdout
    left = _job_processes(os.path.join(folder, "etc", "slurm.conf"))
    assert not left, f"job processes left running after stop: {left}"


def _job_processes(conf: str) -> dict:
    """{pid: command} of the processes of this cluster's jobs (its SLURM_CONF and a SLURM_JOB_ID)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone, or not ours to read
            continue
        if f"SLURM_CONF={conf}".encode() in env and any(e.startswith(b"SLURM_JOB_ID=") for e in env):
            found[int(pid)] = cmd
    return found


@pytest.fixture
def cluster(slurm):
    """The session's cluster, left without jobs after each test (also when it fails), so that what one
    test left queued never holds the CPUs of the next."""
    yield slurm
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=slurm).stdout.split()
    if jobs:
        subprocess.run(["scancel", "--full", *jobs], env=slurm)
    _wait_idle(slurm)


# --------------------------------------------------------------------------- helpers

def _pipeline(env, *args, timeout=900):
    return subprocess.run(["bash", RUN_PIPELINE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _submitted(stdout: str) -> dict:
    """{task: SLURM job id} from a run's "submitted TASK as job ID" lines."""
    return dict(re.findall(r"submitted (\S+) as job (\d+)", stdout))


def _wait_idle(env, timeout=300):
    """Until the cluster has no job left (pending, running or completing)."""
    end = time.time() + timeout
    while time.time() < end:
        if not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env).stdout.strip():
            return
        time.sleep(1)
    raise AssertionError("jobs still queued after %d s" % timeout)


UNSETTLED = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}


def _states(env, job_ids, timeout=60) -> dict:
    """{job id: SLURM state} from the accounting database (what submitit reads), once it has settled:
    slurmdbd records a job's end after squeue has dropped it, and on a loaded machine sacct can still
    say RUNNING for a job that has left the queue (a CI run failed so)."""
    end = time.time() + timeout
    while True:
        r = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                           capture_output=True, text=True, env=env, check=True)
        states = {j: s.split()[0] for j, s in (ln.split("|") for ln in r.stdout.splitlines() if ln)}
        if not UNSETTLED & set(states.values()) or time.time() > end:
            return states
        time.sleep(1)


def _preset(tmp_path, name, change) -> str:
    """The tiny preset with `change(preset)` applied, as a YAML file of its own."""
    with open(TINY) as f:
        preset = yaml.safe_load(f)
    change(preset)
    path = os.path.join(str(tmp_path), f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(preset, f)
    return path


def _set_opt(opts: list, key: str, value) -> None:
    i = opts.index(key)
    opts[i + 1] = value


def _run_dirs(out: str, stage: str) -> dict:
    return {os.path.basename(d): d for d in sorted(glob.glob(os.path.join(out, "runs", stage, "*")))}


def _metrics(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(ln) for ln in f if ln.strip()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def _results(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def _assert_same_pretraining(a: str, b: str) -> None:
    """Same per-iteration loss/accuracy/lr, same final loss and the same weights, bit for bit."""
    import torch

    assert _metrics(a) == _metrics(b)
    ra, rb = _results(a), _results(b)
    for key in ("final_loss", "iterations", "images_seen", "world_size"):
        assert ra[key] == rb[key], key
    wa = torch.load(os.path.join(a, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    wb = torch.load(os.path.join(b, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


# --------------------------------------------------------------------------- tests

def test_tiny_preset_through_slurm_ends_with_the_report_and_matches_local(cluster, tmp_path):
    """Every task a SLURM job with afterok dependencies; the report at the end; pretraining and probe
    numbers equal to a local run's (the detection stages are not compared: not run locally, to save time)."""
    out = str(tmp_path / "slurm")
    r = _pipeline(cluster, "--preset", "tiny", "--out", out, "--launcher", "slurm", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    report = os.path.join(out, "report", "results.md")
    assert r.stdout.strip().splitlines()[-1] == report and os.path.getsize(report) > 0
    jobs = _submitted(r.stdout)
    assert {"data", "report"} <= set(jobs) and any(t.startswith("detect.") for t in jobs)
    _wait_idle(cluster)
    states = _states(cluster, jobs.values())
    assert all(states[j] == "COMPLETED" for j in jobs.values()), states
    names = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobName", "-j", ",".join(jobs.values())],
                           capture_output=True, text=True, env=cluster).stdout.split()
    assert sorted(names) == sorted(f"objcrop.{t}" for t in jobs)  # job names say what runs

    local = str(tmp_path / "local")
    r = _pipeline(cluster, "--preset", "tiny", "--out", local, "--launcher", "local",
                  "--stages", "data proposals pretrain probe")
    assert r.returncode == 0, r.stdout + r.stderr
    pre_slurm, pre_local = _run_dirs(out, "pretrain"), _run_dirs(local, "pretrain")
    assert pre_slurm.keys() == pre_local.keys() and len(pre_slurm) == 2
    for name in pre_slurm:
        _assert_same_pretraining(pre_slurm[name], pre_local[name])
    probe_slurm, probe_local = _run_dirs(out, "probe"), _run_dirs(local, "probe")
    assert probe_slurm.keys() == probe_local.keys()
    for name in probe_slurm:
        a, b = _results(probe_slurm[name]), _results(probe_local[name])
        for key in ("mAP", "knn_mAP", "features", "num_train", "num_test"):
            assert a[key] == b[key], (name, key)


def test_failed_stage_cancels_its_dependents_and_a_rerun_submits_only_what_is_missing(cluster, tmp_path):
    """A conversion that fails (an argument planted through the preset): SLURM cancels what needs it
    (afterok), the probe that does not need it still runs, the pipeline names the failed task and its
    log; the rerun with the mistake fixed submits exactly the tasks that did not complete."""
    def planted(p):
        p["pretrain"]["policies"] = ["random"]
        p["convert"] = {"args": ["--planted-failure"]}

    out = str(tmp_path / "out")
    args = ["--out", out, "--launcher", "slurm", "--wait", "--det-tasks", "voc"]
    r = _pipeline(cluster, "--preset", _preset(tmp_path, "failing", planted), *args)
    assert r.returncode != 0
    jobs = _submitted(r.stdout)
    convert = next(t for t in jobs if t.startswith("convert."))
    log = os.path.join(out, "logs", f"{convert}.log")
    assert f"FAILED stage {convert}" in r.stdout and log in r.stdout and log in r.stderr
    assert "--planted-failure" in open(log).read()
    _wait_idle(cluster)
    states = _states(cluster, jobs.values())
    dependents = {t for t in jobs if t.startswith("detect.") or t == "report"}
    assert len(dependents) == 2
    assert states[jobs[convert]] == "FAILED"
    assert {t: states[jobs[t]] for t in dependents} == {t: "CANCELLED" for t in dependents}
    assert {t: states[jobs[t]] for t in jobs if t not in dependents | {convert}} == \
        {t: "COMPLETED" for t in jobs if t not in dependents | {convert}}

    fixed = _preset(tmp_path, "fixed", lambda p: p["pretrain"].update(policies=["random"]))
    r = _pipeline(cluster, "--preset", fixed, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(_submitted(r.stdout)) == dependents | {convert}
    assert os.path.isfile(os.path.join(out, "report", "results.md"))
    _wait_idle(cluster)


def test_pretraining_cancelled_by_scancel_resumes_from_its_checkpoint(cluster, tmp_path):
    """scancel once pretraining has a checkpoint at iteration >= 2; the rerun's job continues from the
    newest checkpoint: the log says where it resumed, and no iteration before it is trained again."""
    def longer(p):
        p["pretrain"]["policies"] = ["random"]
        _set_opt(p["pretrain"]["opts"], "PRETRAIN.EPOCHS", 2)  # 2 x 3 iterations, a checkpoint after each

    preset, out = _preset(tmp_path, "longer", longer), str(tmp_path / "out")
    args = ["--preset", preset, "--out", out, "--launcher", "slurm", "--stages", "data pretrain"]
    r = _pipeline(cluster, *args)  # submit and return
    assert r.returncode == 0, r.stdout + r.stderr
    task = next(t for t in _submitted(r.stdout) if t.startswith("pretrain."))
    job = _submitted(r.stdout)[task]
    run_dir = os.path.join(out, "runs", "pretrain", task[len("pretrain."):])
    end = time.time() + 600
    while not any(int(re.search(r"ckpt_(\d+)", p).group(1)) >= 2
                  for p in glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.pth.sha256"))):
        assert time.time() < end, "no checkpoint at iteration 2 after 600 s"
        assert job in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=cluster).stdout, \
            "the pretraining job ended before it could be cancelled"
        time.sleep(0.5)
    subprocess.run(["scancel", job], env=cluster, check=True)
    _wait_idle(cluster)
    assert _states(cluster, [job])[job] == "CANCELLED"
    assert not os.path.isfile(os.path.join(run_dir, "model_final.pth"))
    before = [row["iteration"] for row in _metrics(run_dir)]

    r = _pipeline(cluster, *args, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(_submitted(r.stdout)) == {task}  # the data is complete: only the pretraining again
    resumed = re.findall(r"resumed from \S+ckpt_\d+\.pth: iter=(\d+)", open(os.path.join(run_dir, "log.txt")).read())
    assert len(resumed) == 1 and 2 <= int(resumed[0]) < 6, resumed
    k = int(resumed[0])
    after = [row["iteration"] for row in _metrics(run_dir)]
    total = _results(run_dir)["iterations"]
    assert total == 6 and _results(run_dir)["status"] == "ok"
    # the second session wrote k+1 .. 6 and never iteration 1 again (a restart would)
    assert after[-(total - k):] == list(range(k + 1, total + 1)) and after.count(1) == 1, (before, after)
    _wait_idle(cluster)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_pretraining_through_srun_equals_the_local_two_process_run(cluster, tmp_path):
    """Two pretraining processes (DDP, gloo on CPU) launched by srun from SLURM's own task variables
    give the local launcher's 2-process result (torchrun --standalone) bit for bit.

    The pipeline's slurm launcher cannot start this itself: its processes per node come from --gpus,
    which it also asks of SLURM (--gpus-per-node), and a node without GPUs refuses that; the refusal
    is one clear line. So srun runs the local run's own config.yaml, with another output folder."""
    args = ["--preset", "tiny", "--policies", "random", "--stages", "data pretrain", "--gpus", "2"]
    r = _pipeline(cluster, *args, "--out", str(tmp_path / "refused"), "--launcher", "slurm")
    assert r.returncode == 2 and "gres" in r.stderr and "Traceback" not in r.stderr, r.stdout + r.stderr
    _wait_idle(cluster)  # the data job it had submitted before the refusal

    local = str(tmp_path / "local")
    r = _pipeline(cluster, *args, "--out", local, "--launcher", "local")
    assert r.returncode == 0, r.stdout + r.stderr
    (name, run_dir), = _run_dirs(local, "pretrain").items()
    assert _results(run_dir)["world_size"] == 2

    out = str(tmp_path / "srun" / name)
    rank_env = ("export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID "
                f"MASTER_ADDR=127.0.0.1 MASTER_PORT={_free_port()}")
    train = f"exec {sys.executable} -m objcrop.pretrain.train_net --config-file {run_dir}/config.yaml --opts OUTPUT_DIR {out}"
    r = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1", "--time=15",
                        "--job-name=objcrop.test.pretrain-2proc", "bash", "-c", f"{rank_env}; {train}"],
                       capture_output=True, text=True, env=cluster, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0/2 on cpu (gloo)" in open(os.path.join(out, "log.txt")).read()
    _assert_same_pretraining(out, run_dir)
