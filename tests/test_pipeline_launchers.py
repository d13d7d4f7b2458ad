"""`--launcher slurm` (through submitit, against a stand-in `sbatch`) and `--launcher submitit-local` (real run)."""
import json
import os
import re
import stat
import subprocess
import sys

import objcrop.pipeline as pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = os.path.join(REPO, "scripts", "run_pipeline.sh")

# There is no SLURM cluster here: this stand-in records each submission file and answers like sbatch.
FAKE_SBATCH = """#!/usr/bin/env bash
dir="$(dirname "$0")"
n=$(( $(ls "$dir"/submitted_* 2>/dev/null | wc -l) + 100 ))
cp "$1" "$dir/submitted_$n.sh"
echo "Submitted batch job $n"
"""


def _env(extra_path=None):
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(filter(None, [extra_path, os.path.dirname(sys.executable), env.get("PATH", "")]))
    env["PYTHON"] = sys.executable
    return env


def _sbatch_files(bin_dir):
    out = {}
    for name in sorted(os.listdir(bin_dir)):
        if name.startswith("submitted_"):
            text = open(os.path.join(bin_dir, name)).read()
            job = re.search(r"#SBATCH --job-name=objcrop\.(\S+)", text).group(1)
            out[job] = (name[len("submitted_"):-3], text)
    return out


def test_slurm_submits_every_stage_with_afterok_dependencies(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH)
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit only checks that it exists
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "tiny", "--out", str(out), "--launcher", "slurm",
                        "--gpus", "4", "--nodes", "2", "--slurm-partition", "gpu"],
                       capture_output=True, text=True, env=_env(str(bin_dir)))
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = _sbatch_files(bin_dir)
    plan = pipeline.build_plan(pipeline.load_preset("tiny"), str(out))
    rnd, dil = (next(t.name.split(".", 1)[1] for t in plan if t.name.startswith(f"pretrain.moco_v2_{p}_"))
                for p in ("random_none", "obj-obj-dilate_gt"))
    assert set(jobs) == {t.name for t in plan}
    ids = {name: job_id for name, (job_id, _) in jobs.items()}

    def deps(name):
        m = re.search(r"#SBATCH --dependency=afterok:(\S+)", jobs[name][1])
        return set(m.group(1).split(":")) if m else set()

    assert deps("data") == set()
    pre = f"pretrain.{dil}"
    assert deps(pre) == {ids["data"], ids["proposals.gt"]}
    assert deps(f"convert.{dil}") == {ids[pre]}
    assert deps(f"detect.coco.{dil}.seed0") == {ids[f"convert.{dil}"]}
    assert ids[f"detect.coco.{rnd}.seed0"] in deps("report")
    pre_text = jobs[pre][1]
    assert "#SBATCH --nodes=2" in pre_text and "#SBATCH --gpus-per-node=4" in pre_text
    assert "#SBATCH --partition=gpu" in pre_text
    assert "#SBATCH --nodes=1" in jobs["data"][1]
    assert "the report will be written to" in r.stdout


def test_cluster_command_is_multinode_torchrun_and_d2_launch(tmp_path):
    mod = pipeline
    pre = mod.Task("pretrain.x", "pretrain", ["pretrain", "--config-file", "c.yaml", "--opts", "A", "1"], [],
                   gpus=8, nodes=4, distributed="torchrun")
    cmd = mod.cluster_shell_command(pre, "/l/pretrain.x.log")
    assert "-m torch.distributed.run --nnodes=\"$NNODES\" --node_rank=\"$NODE\" --nproc_per_node=8" in cmd
    assert "-m objcrop.pretrain.train_net --config-file c.yaml --opts A 1" in cmd
    det = mod.Task("detect.x", "detect", ["detect", "train", "--weights", "w.pkl"], [], gpus=8, nodes=2,
                   distributed="d2")
    cmd = mod.cluster_shell_command(det, "/l/detect.x.log")
    assert "--num-gpus 8 --num-machines \"$NNODES\" --machine-rank \"$NODE\" --dist-url \"tcp://$MASTER:29512\"" in cmd
    # the generated script itself: on node 0 it runs the command, on node 1 of 2 only logs (single-node task)
    one = mod.Task("report", "report", ["--version"], [])
    log = str(tmp_path / "report.log")
    script = mod.cluster_shell_command(one, log)
    for node in ("0", "1"):
        r = subprocess.run(["bash", "-c", script], env=dict(os.environ, SLURM_NODEID=node, SLURM_NNODES="2"),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert "objcrop 0." in open(log).read() and "node 0 of 2" in open(log).read()
    node1 = open(log + ".node1").read()
    assert "node 1 of 2" in node1 and "objcrop 0." not in node1


def test_slurm_without_a_cluster_is_one_line(tmp_path):
    """No SLURM: no srun (submitit refuses), or SLURM's commands installed without a controller
    (sbatch refuses the first job). Either way one line of ours says so, without a traceback."""
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "tiny", "--out", str(tmp_path), "--launcher", "slurm"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("objcrop pipeline: error:")]
    assert len(ours) == 1 and ours[0].startswith(("objcrop pipeline: error: --launcher slurm:",
                                                  "objcrop pipeline: error: submitting data failed:"))


def test_submitit_local_runs_stages_in_dependency_order(tmp_path):
    """submitit's local executor really runs the jobs (data, then proposals once data is done)."""
    out = tmp_path / "out"
    cmd = ["bash", RUN_PIPELINE, "--preset", "tiny", "--out", str(out), "--launcher", "submitit-local",
           "--stages", "data proposals"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "logs" / "pipeline.log").read_text()
    assert log.index("done data") < log.index("submitted proposals.gt")  # waited for its dependency
    assert os.path.isfile(out / "data" / "meta.json") and os.path.getsize(out / "proposals" / "gt.store") > 0
    assert "node 0 of 1" in (out / "logs" / "proposals.gt.log").read_text()  # ran through the job script
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0 and "submitted" not in r.stdout  # complete: nothing resubmitted


def test_a_refused_submission_cancels_the_jobs_already_submitted(tmp_path):
    """sbatch refuses the third job (a limit, a bad account): the two already queued would wait for a
    dependency that never comes, so the pipeline cancels them and says so (guards against leaving
    orphaned jobs in the user's queue)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    refusing = FAKE_SBATCH.replace('cp "$1"', 'if [ "$n" -ge 102 ]; then echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi\ncp "$1"')
    for name, text in (("sbatch", refusing), ("srun", "#!/bin/sh\nexit 1\n"),
                       ("scancel", '#!/bin/sh\necho "$@" >> "$(dirname "$0")/cancelled"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "tiny", "--out", str(tmp_path / "out"), "--launcher", "slurm"],
                       capture_output=True, text=True, env=_env(str(bin_dir)))
    assert r.returncode != 0
    assert "QOSMaxSubmitJobPerUserLimit" in r.stderr and "2 earlier job(s) cancelled" in r.stderr
    cancelled = (bin_dir / "cancelled").read_text().split()
    assert "100" in cancelled and "101" in cancelled
