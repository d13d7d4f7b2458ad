"""The pretraining engine end to end: real DDP (gloo, 2 processes), kill -9 + --resume, damaged
checkpoints, NaN stop. ResNet-18 on 32-px crops of the small generated dataset keeps it quick."""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from _tiny_pretrain import TINY as TINY_RUN
from _tiny_pretrain import env as _env
from _tiny_pretrain import pretrain_cmd


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest

TINY = TINY_RUN + ["LOG.PRINT_PERIOD", "1"]


def _pretrain_cmd(synth_dir, out_dir, *opts):
    return pretrain_cmd(synth_dir, out_dir, "LOG.PRINT_PERIOD", "1", *opts)


def _iterations(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_run_writes_checkpoint(synth_dir, tmp_path):
    from objcrop.datasets import load_dataset
    from objcrop.datasets.boxes import gt_boxes as gt_boxes_xyxy
    from objcrop.pretrain.proposals import ProposalStore

    # a real proposal store (ground-truth boxes, top-1 kept) that misses one image: that one falls back
    records, _ = load_dataset(f"synth:{synth_dir}:train")
    store = ProposalStore.write(str(tmp_path / "boxes.store"),
                                {r["image_id"]: (gt_boxes_xyxy(r), [1.0] * len(r["annotations"])) for r in records[1:]},
                                meta={"method": "gt-test"})
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd = _pretrain_cmd(synth_dir, out, "PRETRAIN.EPOCHS", "1", "PRETRAIN.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "1",
                         "DATA.PROPOSALS", store, "DATA.PROPOSALS_TOPK", "1")
    cmd = launcher + cmd[1:]  # `-m objcrop.pretrain.train_net ...` under torchrun
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["world_size"] == 2 and results["iterations"] >= 1
    assert results["device"].startswith("cpu: ") and results["device"].endswith(", 1 thread(s)")
    # the store keeps its top-1 box: the run says so in its proposals (objcrop.pretrain.engine.results.proposals_label)
    assert results["pretrain"]["proposals"] == "gt-test-top1" and results["pretrain"]["policy"] == "obj-obj-dilate"
    log = (out / "log.txt").read_text()
    assert "effective batch 8 = 2 process(es) x 4" in log and "gloo" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["arch"] == "resnet18" and "layer4.1.bn2.running_var" in final["backbone"]
    assert not any(k.startswith("fc.") for k in final["backbone"])
    assert any(n.endswith(".pth") for n in os.listdir(out / "checkpoints"))
    assert not (out / "log.txt.rank1").read_text().count("Traceback")
    # the method's own metrics travel with the loss: the positive's rank and the collapse indicator
    assert {"acc_top1", "embedding_spread"} <= set(_iterations(out)[-1])


def test_kill9_mid_epoch_then_resume_neither_repeats_nor_skips(synth_dir, tmp_path):
    opts = ["PRETRAIN.EPOCHS", "3", "PRETRAIN.BATCH_SIZE", "4", "DATA.NUM_WORKERS", "0"]
    reference = tmp_path / "uninterrupted"  # checkpoints only at epoch ends: saving must not change the run
    subprocess.run(_pretrain_cmd(synth_dir, reference, *opts), env=_env(1), check=True, capture_output=True, timeout=240)
    expected = _iterations(reference)
    total = expected[-1]["iteration"]
    per_epoch = total // 3
    assert per_epoch >= 3, "the test needs a checkpoint strictly inside an epoch"

    run = tmp_path / "killed"
    opts += ["CHECKPOINT.PERIOD", "2"]
    proc = subprocess.Popen(_pretrain_cmd(synth_dir, run, *opts), env=_env(1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # kill -9 right after the checkpoint in the middle of the 2nd epoch has been written
    marker = run / "checkpoints" / f"ckpt_{per_epoch + 2:08d}.pth.sha256"
    deadline = time.time() + 200
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "results.json").exists()

    cmd = _pretrain_cmd(synth_dir, run, *opts)
    resumed = subprocess.run(cmd[:3] + ["--resume"] + cmd[3:], env=_env(1), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = (run / "log.txt").read_text()
    resumed_at = re.search(r"resumed from \S+: iter=(\d+) \(epoch (\d+), batch (\d+)\)", log)
    assert resumed_at and int(resumed_at.group(3)) > 0, "expected a resume from inside an epoch"

    got = _iterations(run)
    assert [r["iteration"] for r in got] == list(range(1, total + 1))  # no step repeated or skipped
    # and the resumed run is the uninterrupted one: same data, RNG, queue, optimiser state
    for a, b in zip(got, expected):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["lr"] == pytest.approx(b["lr"])
    final = json.loads((run / "results.json").read_text())
    assert final["iterations"] == total
    assert final["final_loss"] == pytest.approx(json.loads((reference / "results.json").read_text())["final_loss"], rel=1e-4)

    # --resume on a finished run changes nothing
    again = subprocess.run(cmd[:3] + ["--resume"] + cmd[3:], env=_env(1), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert json.loads((run / "results.json").read_text()) == final
    # a finished run whose config changed since (a new key's default) resumes from its final
    # checkpoint and trains nothing: its throughput is still the whole run's, not 0
    assert final["throughput"] == pytest.approx(final["images_seen"] / final["train_time_s"], rel=1e-3)
    (run / "results.json").write_text(json.dumps(dict(final, config_hash="an older config",
                                                        computation_hash="an older computation")))
    refinished = subprocess.run(cmd[:3] + ["--resume"] + cmd[3:], env=_env(1), capture_output=True, text=True,
                                timeout=240)
    assert refinished.returncode == 0, refinished.stdout[-3000:] + refinished.stderr[-3000:]
    refinalised = json.loads((run / "results.json").read_text())
    assert refinalised["iterations"] == total and refinalised["images_seen"] == final["images_seen"]
    # the same figure up to the time the last session spent loading and saving (a large share of this tiny run)
    assert refinalised["throughput"] == pytest.approx(refinalised["images_seen"] / refinalised["train_time_s"], rel=1e-3)
    assert refinalised["throughput"] > 0.5 * final["throughput"]


def test_damaged_or_incomplete_checkpoints_are_reported_and_skipped(tmp_path, caplog):
    from objcrop.pretrain.engine.checkpoint import RESUME_KEYS, Checkpointer, rng_state

    ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep_last=3)
    state = {k: 0 for k in RESUME_KEYS}
    for it in (1, 2, 3, 4):
        ckpt.save(dict(state, iteration=it, rng=rng_state(), model={"w": torch.full((1000,), float(it))}), it)
    assert [it for it, _ in ckpt.list()] == [4, 3, 2]  # keeps the last 3
    paths = dict(ckpt.list())
    with open(paths[4], "r+b") as f:  # flipped bytes: the hash no longer matches
        f.seek(200)
        f.write(b"\xff" * 64)
    torch.save({"iteration": 3}, paths[3])  # a loadable file that lacks the resume keys
    os.remove(paths[3] + ".sha256")
    with caplog.at_level("WARNING"):
        loaded, path = ckpt.load_newest_valid()
    assert path == paths[2] and loaded["iteration"] == 2 and float(loaded["model"]["w"][0]) == 2.0
    assert f"{paths[4]}: damaged (sha256 differs" in caplog.text
    assert f"{paths[3]}: incomplete checkpoint, missing keys" in caplog.text
    with open(paths[2], "wb") as f:
        f.write(b"not a checkpoint")
    os.remove(paths[2] + ".sha256")
    assert ckpt.load_newest_valid() == (None, None)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(synth_dir, tmp_path, monkeypatch):
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.hooks import TrainingDiverged
    from objcrop.pretrain.engine.trainer import PretrainTrainer
    from objcrop.records import read_results
    from objcrop.pretrain.methods import MoCoV2

    out = tmp_path / "nan"
    cfg = merge_config(get_pretrain_cfg, None, TINY + ["DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out),
                                                        "PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "4",
                                                        "DATA.NUM_WORKERS", "0", "CHECKPOINT.PERIOD", "2"])
    calls = {"n": 0}
    forward = MoCoV2.forward

    def forward_that_diverges(self, im_q, im_k):
        calls["n"] += 1
        out = forward(self, im_q, im_k)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(MoCoV2, "forward", forward_that_diverges)
    trainer = PretrainTrainer(cfg, DistContext(), setup_logger("objcrop.pretrain.test", str(out)))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iter=3.*ckpt_00000002\.pth"):
        trainer.train()
    results = read_results(str(out / "results.json"))  # a valid record of the current schema
    assert results["status"] == "failed" and "nan" in results["error"]
    # the guard runs before the counters: the diverged step is neither counted nor averaged in
    assert results["images_seen"] == 2 * 4 and math.isfinite(results["final_loss"])
    assert [n for n in os.listdir(out / "checkpoints") if n.endswith(".pth")] == ["ckpt_00000002.pth"]
    assert not (out / "model_final.pth").exists()


def test_hooks_run_in_detectron2_order_after_the_built_in_ones(synth_dir, tmp_path):
    """before_train, (before_step, after_step) per batch, after_epoch per epoch, after_train; a hook
    registered after the built-in ones sees the step's loss, its metrics line and, at the end, results.json."""
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.hooks import HookBase
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    out = tmp_path / "hooks"
    cfg = merge_config(get_pretrain_cfg, None, TINY + ["DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out),
                                                        "PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "4",
                                                        "DATA.NUM_WORKERS", "0"])

    class Recorder(HookBase):
        calls = []

        def before_train(self):
            self.calls.append(("before_train", self.trainer.state.iteration))

        def before_step(self):
            self.calls.append(("before_step", self.trainer.state.iteration))

        def after_step(self):
            logged = _iterations(out)[-1]
            assert logged["iteration"] == self.trainer.state.iteration and logged["loss"] == self.trainer.step.loss
            self.calls.append(("after_step", self.trainer.state.iteration))

        def after_epoch(self):
            self.calls.append(("after_epoch", self.trainer.state.epoch))

        def after_train(self):
            assert (out / "results.json").exists() and (out / "model_final.pth").exists()
            self.calls.append(("after_train", self.trainer.error))

    class RecordingTrainer(PretrainTrainer):
        def build_hooks(self):
            return super().build_hooks() + [Recorder()]

    trainer = RecordingTrainer(cfg, DistContext(), setup_logger("objcrop.pretrain.test.hooks", str(out)))
    results = trainer.train()
    per_epoch = trainer.per_epoch
    expected = [("before_train", 0)]
    for epoch in range(cfg.PRETRAIN.EPOCHS):
        for i in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            expected += [("before_step", i), ("after_step", i + 1)]
        expected.append(("after_epoch", epoch + 1))
    assert Recorder.calls == expected + [("after_train", None)]
    assert results["iterations"] == cfg.PRETRAIN.EPOCHS * per_epoch


def test_byol_run_in_one_process_exports_the_online_backbone(synth_dir, tmp_path):
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    from objcrop.records import provenance_of

    out = tmp_path / "byol"
    cfg = merge_config(get_pretrain_cfg, "pretrain/byol_demo.yaml",
                       TINY + ["DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out), "PRETRAIN.EPOCHS", "1",
                               "PRETRAIN.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "0", "PRETRAIN.BYOL.PROJ_HIDDEN", "64",
                               "PRETRAIN.TAG", "short"])
    results = PretrainTrainer(cfg, DistContext(), setup_logger("objcrop.pretrain.test", str(out))).train()
    assert results["status"] == "ok" and results["pretrain"]["method"] == "byol" and results["final_loss"] > 0
    # the tag is a field of its own; the report's row label (policy_label) still joins it to the policy
    assert results["pretrain"]["policy"] == "obj-obj-dilate" and results["pretrain"]["tag"] == "short"
    assert provenance_of(results).policy_label == "obj-obj-dilate-short"
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["pretrain"] == results["pretrain"]  # the weights carry the same provenance block
    torch.testing.assert_close(final["backbone"]["conv1.weight"], final["model"]["online.conv1.weight"])
    assert 0.996 <= float(final["model"]["momentum"]) <= 1.0  # the target EMA rate was scheduled


def test_every_shipped_pretraining_config_merges():
    # a preset's typo or a wrong type (e.g. an int for a float key) fails here, not after a GPU lease started
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval_configs", "pretrain")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    assert "study_gpu.yaml" in names
    for name in names:
        cfg = merge_config(get_pretrain_cfg, os.path.join(folder, name), [])
        assert cfg.PRETRAIN.EPOCHS > 0, name


def test_views_augmented_on_the_device_train_like_views_augmented_in_the_workers(synth_dir, tmp_path):
    # VIEWS.AUGMENT_ON device: the workers ship uint8 crops and drawn parameters, the trainer augments
    # the batch. Same seed, same draws: the first steps' losses agree up to float rounding.
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    losses = {}
    for where in ("worker", "device"):
        out = tmp_path / where
        cfg = merge_config(get_pretrain_cfg, None, TINY + [
            "DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out), "PRETRAIN.EPOCHS", "1",
            "PRETRAIN.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "1", "VIEWS.AUGMENT_ON", where])
        results = PretrainTrainer(cfg, DistContext(), setup_logger(f"objcrop.pretrain.test.{where}", str(out))).train()
        assert results["status"] == "ok"
        losses[where] = [m["loss"] for m in _iterations(out)]
    assert len(losses["device"]) == len(losses["worker"]) >= 2
    assert losses["device"] == pytest.approx(losses["worker"], rel=1e-4)
    assert "batched on cpu (VIEWS.AUGMENT_ON device)" in (tmp_path / "device" / "log.txt").read_text()


def test_an_unknown_augment_place_is_a_config_error():
    from objcrop.errors import ConfigError
    from objcrop.pretrain.views import build_view_policy, get_views_cfg

    cfg = get_views_cfg()
    cfg.VIEWS.AUGMENT_ON = "gpu"
    with pytest.raises(ConfigError, match="VIEWS.AUGMENT_ON"):
        build_view_policy(cfg)
