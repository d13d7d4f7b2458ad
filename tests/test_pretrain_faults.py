"""Issue 21 §3, pretraining: faults tried on the real trainer (docs/reliability.md's pretraining rows).

* a damaged newest checkpoint (truncated, or bytes that no longer match its sha256 sidecar) is skipped
  with a warning and the run resumes from the one before, then trains exactly as an uninterrupted run;
* a disk that fills while a checkpoint is written (RLIMIT_FSIZE in a subprocess) stops the run with one
  line naming the file and the checkpoint still there, which is intact; the rerun resumes from it.

A NaN mid-run is tests/test_pretrain_engine.py::test_nan_loss_stops_with_clear_error_and_keeps_checkpoint.
ResNet-18 on 32-px crops of the small generated dataset, 2 epochs of batch 4, keeps each run a few seconds.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["PRETRAIN.ARCH", "resnet18", "PRETRAIN.MOCO.K", "16", "PRETRAIN.MOCO.MLP_HIDDEN", "64",
        "PRETRAIN.MOCO.DIM", "32", "VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate",
        "DATA.PROPOSALS", "gt", "PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "4", "DATA.NUM_WORKERS", "0",
        "CHECKPOINT.PERIOD", "2", "CHECKPOINT.KEEP_LAST", "3"]


def _opts(synth_dir, out):
    return TINY + ["DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out)]


def _trainer(synth_dir, out, stop_at=None):
    """The real trainer; with stop_at, the process 'dies' (KeyboardInterrupt) after that iteration's hooks."""
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.hooks import HookBase
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    class Stop(HookBase):
        def after_step(self):
            if self.trainer.state.iteration == stop_at:
                raise KeyboardInterrupt

    class Trainer(PretrainTrainer):
        def build_hooks(self):
            return super().build_hooks() + [Stop()]

    cfg = merge_config(get_pretrain_cfg, None, _opts(synth_dir, out))
    logger = setup_logger(f"objcrop.pretrain.faults.{out.name}", str(out))
    trainer = Trainer(cfg, DistContext(), logger)
    trainer.checkpointer.logger = logger
    return trainer


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def reference(synth_dir, tmp_path_factory):
    """An uninterrupted run: its per-iteration losses are what every recovered run must reproduce."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the module fixture runs before the per-test one
    try:
        out = tmp_path_factory.mktemp("faults") / "reference"
        trainer = _trainer(synth_dir, out)
        trainer.train()
    finally:
        torch.set_num_threads(before)
    rows = _metrics(out)
    # checkpoints at 2 (inside epoch 1), 4 (at its end, or inside it) and 6 (inside epoch 2)
    assert 3 <= trainer.per_epoch <= 5 and len(rows) == 2 * trainer.per_epoch
    return rows


def _same_run(got, expected):
    assert [r["iteration"] for r in got] == [r["iteration"] for r in expected]  # none repeated or skipped
    for a, b in zip(got, expected):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)


def test_damaged_newest_checkpoints_are_skipped_and_the_run_resumes_from_the_one_before(synth_dir, tmp_path, reference):
    """The newest checkpoint truncated, the one before it with a wrong sha256 sidecar: both are skipped with
    a warning naming them and the run resumes from the third, then trains as the uninterrupted run."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _trainer(synth_dir, out, stop_at=7).train()
    checkpoints = dict(_trainer(synth_dir, out).checkpointer.list())
    assert sorted(checkpoints) == [2, 4, 6]
    truncated, mismatched, intact = checkpoints[6], checkpoints[4], checkpoints[2]
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    os.remove(truncated + ".sha256")  # the torn file itself, not its sidecar, must give it away
    with open(mismatched + ".sha256", "w") as f:
        f.write("0" * 64 + "\n")

    _trainer(synth_dir, out).train(resume=True)
    log = (out / "log.txt").read_text()
    assert f"skipping checkpoint: {truncated}: cannot be read as a checkpoint" in log
    assert f"skipping checkpoint: {mismatched}: damaged (sha256 differs" in log
    assert f"resumed from {intact}: iter=2" in log
    _same_run(_metrics(out), reference)
    assert json.loads((out / "results.json").read_text())["status"] == "ok"


def test_a_kill_between_checkpoint_and_prune_leaves_nothing_an_uninterrupted_run_does_not(synth_dir, tmp_path):
    """A kill after the last checkpoint was written but before its sha256 sidecar and the pruning: the
    resume starts at the last iteration and trains nothing, yet the run's folder must end as an
    uninterrupted run's (found by tests/test_faults_pipeline_kill.py under load): the loaded checkpoint
    gets its sidecar, the older ones are pruned to CHECKPOINT.KEEP_LAST (3)."""
    out = tmp_path / "run"
    _trainer(synth_dir, out).train()
    checkpointer = _trainer(synth_dir, out).checkpointer
    uninterrupted = [path for _, path in checkpointer.list()]
    newest, oldest = uninterrupted[0], uninterrupted[-1]
    assert len(uninterrupted) == 3
    # the state such a kill leaves: the newest without its sidecar, one more old checkpoint not yet pruned
    import shutil

    stale = checkpointer.path_for(1)
    shutil.copyfile(oldest, stale)
    shutil.copyfile(oldest + ".sha256", stale + ".sha256")
    os.remove(newest + ".sha256")
    for name in ("model_final.pth", "results.json"):  # written after the last checkpoint: not yet there
        os.remove(out / name)

    _trainer(synth_dir, out).train(resume=True)
    assert f"resumed from {newest}" in (out / "log.txt").read_text()
    assert [path for _, path in checkpointer.list()] == uninterrupted
    assert not os.path.exists(stale + ".sha256") and os.path.exists(newest + ".sha256")
    assert checkpointer.verify(newest)["iteration"] == int(os.path.basename(newest)[5:13])
    assert json.loads((out / "results.json").read_text())["status"] == "ok"


def test_a_kill_inside_pruning_never_leaves_a_hash_without_its_checkpoint(tmp_path, monkeypatch):
    """Guards against a kill between removing a pruned checkpoint and removing its sha256 sidecar leaving
    a sidecar that names nothing (tests/test_faults_pipeline_kill.py caught one on CI): the sidecar goes
    first, and a resume's tidy removes any orphan sidecar an older objcrop left."""
    from objcrop.pretrain.engine import checkpoint as ckpt

    checkpointer = ckpt.Checkpointer(str(tmp_path), keep_last=2)
    for it in (1, 2):
        checkpointer.save({"iteration": it}, it)
    real_remove, removed = os.remove, []

    def killed_after_one(path):
        if removed:
            raise KeyboardInterrupt  # the process dies before the second removal
        removed.append(path)
        real_remove(path)

    monkeypatch.setattr(ckpt.os, "remove", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save({"iteration": 3}, 3)  # prunes ckpt 1
    monkeypatch.setattr(ckpt.os, "remove", real_remove)
    names = sorted(os.listdir(tmp_path))
    assert all(n[:-len(".sha256")] in names for n in names if n.endswith(".sha256")), names

    orphan = tmp_path / "ckpt_00000000.pth.sha256"  # what a kill left with the old order
    orphan.write_text("0" * 64 + "\n")
    checkpointer.tidy_after_resume(checkpointer.path_for(3))
    assert not orphan.exists()
    assert [it for it, _ in checkpointer.list()] == [3, 2]  # the half-pruned ckpt 1 pruned to keep_last


DISK_FULL_DRIVER = """
import resource, sys
from objcrop.cli import run_stage_main
from objcrop.pretrain import train_net
from objcrop.pretrain.engine.checkpoint import CheckpointHook

limit, fill_after = int(sys.argv[1]), int(sys.argv[2])
after_step = CheckpointHook.after_step

def after_step_on_a_filling_disk(self):
    # from this iteration on no file may grow past `limit` bytes: far below a checkpoint, far above a log line
    if self.trainer.state.iteration == fill_after + 1:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    after_step(self)

CheckpointHook.after_step = after_step_on_a_filling_disk
sys.exit(run_stage_main(train_net.main, sys.argv[3:], "objcrop pretrain"))
"""


def test_a_disk_full_while_checkpointing_is_one_line_keeps_the_previous_checkpoint_and_the_rerun_resumes(
        synth_dir, tmp_path, reference):
    from objcrop.io import sha256_file
    from objcrop.pretrain.engine.checkpoint import Checkpointer

    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cli = ["--opts", *_opts(synth_dir, out)]
    full = subprocess.run([sys.executable, "-c", DISK_FULL_DRIVER, str(1 << 20), "2", *cli], env=env,
                          capture_output=True, text=True, timeout=300)
    ckpts = out / "checkpoints"
    first, second = ckpts / "ckpt_00000002.pth", ckpts / "ckpt_00000004.pth"
    assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith(f"objcrop pretrain: error: {second}: could not be written")
    assert f"the newest checkpoint is still {first}" in error and "--resume" in error
    assert sorted(os.listdir(ckpts)) == [first.name, first.name + ".sha256"]  # no partial file, no stray tmp
    assert sha256_file(str(first)) == (ckpts / (first.name + ".sha256")).read_text().strip()
    assert Checkpointer(str(ckpts)).verify(str(first))["iteration"] == 2  # intact and loadable
    assert not (out / "results.json").exists() and not (out / "model_final.pth").exists()

    rerun = subprocess.run([sys.executable, "-m", "objcrop.pretrain.train_net", "--resume", *cli], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert f"resumed from {first}: iter=2" in (out / "log.txt").read_text()
    _same_run(_metrics(out), reference)


def test_a_run_resumed_on_other_code_lists_both_in_its_record(synth_dir, tmp_path, monkeypatch):
    """Guards against a results.json that names only the last session's code when a run was resumed
    after an upgrade (its numbers come from both): the checkpoint carries the history, the record lists it."""
    from objcrop.pretrain.engine import trainer as trainer_module

    out = tmp_path / "run"
    first = {"objcrop": "0.1.0", "commit": "1" * 40, "dirty": False}
    later = {"objcrop": "0.1.0", "commit": "2" * 40, "dirty": True}
    monkeypatch.setattr(trainer_module, "code_identity", lambda: first)
    with pytest.raises(KeyboardInterrupt):
        _trainer(synth_dir, out, stop_at=3).train()
    monkeypatch.setattr(trainer_module, "code_identity", lambda: later)
    _trainer(synth_dir, out).train(resume=True)
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok" and record["code_history"] == [first, later]
    assert record["code"]["objcrop"] == "0.1.0" and "commit" in record["code"]
    assert record["code"] == later  # the writing session's code, as its log and history name it
    assert ("code: objcrop 0.1.0 (commit 111111111111); then objcrop 0.1.0 (commit 222222222222 with uncommitted "
            "changes) (this run was trained by each in turn)") in (out / "log.txt").read_text()
