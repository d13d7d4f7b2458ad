"""The whole pipeline on the tiny preset, with every stage real: interrupted mid-run, resumed, then re-run.

One run does three checks, because each pipeline run costs minutes of CPU:
1. the pipeline is killed (SIGTERM, as a scheduler or Ctrl-C does) once pretraining has a checkpoint;
2. the same command again skips what was complete (asserted from its log), finishes, and every stage's
   outputs are there: dataset, proposal store, checkpoint, probe, converted weights, VOC- and
   COCO-format detection, report;
3. a third run skips every stage but the report.
"""
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = os.path.join(REPO, "scripts", "run_pipeline.sh")
STAGE_MODULES = ["objcrop.datasets.cli", "objcrop.pretrain.proposals.cli", "objcrop.pretrain.train_net",
                 "objcrop.pretrain.probe", "objcrop.convert.cli", "objcrop.detection.cli", "objcrop.report.cli"]


def _missing_stages():
    missing = []
    for name in STAGE_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ImportError:
            missing.append(name)
    return missing


pytestmark = pytest.mark.skipif(bool(_missing_stages()), reason=f"stage modules not importable yet: {_missing_stages()}")


def _run_name(out):
    """The obj-obj-dilate run's directory name, as the plan gives it (objcrop.records.run_name)."""
    import objcrop.pipeline as pipeline

    tasks = pipeline.build_plan(pipeline.load_preset("tiny"), str(out))
    return next(t.name.split(".", 1)[1] for t in tasks if t.name.startswith("pretrain.moco_v2_obj-obj-dilate_gt_"))


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env


def _cmd(out):
    # one object-aware run keeps it short and still needs every stage, proposals included
    return ["bash", RUN_PIPELINE, "--preset", "tiny", "--out", str(out), "--policies", "obj-obj-dilate"]


def _ok(path):
    with open(path) as f:
        data = json.load(f)
    assert data["status"] == "ok", path
    return data


def _wait_for(predicate, proc, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if predicate() or proc.poll() is not None:
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the pipeline")


@pytest.mark.timeout(1500)
def test_pipeline_interrupted_resumes_and_produces_every_stage(tmp_path):
    out = tmp_path / "run"
    RUN = _run_name(out)
    assert RUN.endswith("_r50_b8_e1_data-train_s0")  # tiny.yaml's ResNet-50, batch 8, 1 epoch, seed 0
    pipeline_log = out / "logs" / "pipeline.log"
    pretrain_dir = out / "runs" / "pretrain" / RUN

    # 1. interrupt once pretraining has written a checkpoint
    with open(tmp_path / "first.out", "w") as first_out:
        proc = subprocess.Popen(_cmd(out), stdout=first_out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
        _wait_for(lambda: glob.glob(str(pretrain_dir / "checkpoints" / "*.pth")), proc, timeout=900)
        assert proc.poll() is None, (tmp_path / "first.out").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    first = pipeline_log.read_text()
    interrupted = first.split("interrupted during ")[1].split(";")[0]
    assert interrupted.startswith(("pretrain.", "probe.", "convert."))  # pretraining, or just after it
    meta_mtime = os.path.getmtime(out / "data" / "meta.json")

    # 2. the same command continues: earlier stages skipped, the interrupted one redone, all outputs there
    r = subprocess.run(_cmd(out), capture_output=True, text=True, env=_env(), cwd=REPO, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    second = pipeline_log.read_text()[len(first):]
    assert "skip data: outputs complete" in second and "skip proposals.gt: outputs complete" in second
    assert "run data:" not in second and f"run {interrupted}:" in second
    assert os.path.getmtime(out / "data" / "meta.json") == meta_mtime  # not regenerated
    if interrupted.startswith("pretrain."):  # it continued from its checkpoint rather than from iteration 0
        assert "resumed from" in (out / "logs" / f"{interrupted}.log").read_text()
    report_md = str(out / "report" / "results.md")
    assert r.stdout.strip().splitlines()[-1] == report_md  # the pipeline ends by printing the report path

    assert os.path.isfile(out / "data" / "annotations" / "instances_train.json")
    assert os.path.getsize(out / "proposals" / "gt.store") > 0
    pre = _ok(pretrain_dir / "results.json")
    assert pre["pretrain"]["policy"] == "obj-obj-dilate" and pre["pretrain"]["proposals"] == "gt"
    assert os.path.isfile(pretrain_dir / "model_final.pth") and os.path.isfile(pretrain_dir / "config.yaml")
    probe = _ok(out / "runs" / "probe" / RUN / "results.json")
    assert 0.0 <= probe["mAP"] <= 1.0 and probe["pretrain"]["policy"] == "obj-obj-dilate"
    assert os.path.getsize(out / "weights" / f"{RUN}.pkl") > 0
    voc = _ok(out / "runs" / "detect_voc" / RUN / "seed0" / "results.json")
    coco = _ok(out / "runs" / "detect_coco" / RUN / "seed0" / "results.json")
    assert voc["task"] == "voc_det" and "AP50" in voc["box"]
    assert coco["task"] == "coco_instseg" and "AP" in coco["mask"]
    assert voc["pretrain"]["policy"] == coco["pretrain"]["policy"] == "obj-obj-dilate"  # carried through the .pkl
    md = open(report_md).read()
    assert "| moco_v2 | obj-obj-dilate | gt | 1 |" in md
    for header in ("probe mAP", "VOC AP50", "COCO box AP", "COCO mask AP"):
        assert header in md
    for name in ("results.csv", "results.tex", "plots/bars.png", "plots/loss_curves.png"):
        assert os.path.isfile(out / "report" / name), name
    for stage_log in ("data", "proposals.gt", f"pretrain.{RUN}", f"probe.{RUN}", f"convert.{RUN}",
                      f"detect.voc.{RUN}.seed0", f"detect.coco.{RUN}.seed0", "report"):
        assert os.path.isfile(out / "logs" / f"{stage_log}.log"), stage_log

    # 3. nothing left to do but the report
    before = pipeline_log.read_text()
    r = subprocess.run(_cmd(out), capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    third = pipeline_log.read_text()[len(before):]
    runs = [line for line in third.splitlines() if "] run " in line]
    assert len(runs) == 1 and "run report:" in runs[0]
    assert third.count("skip ") == 7
