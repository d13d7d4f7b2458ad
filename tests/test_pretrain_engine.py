"""The pretraining engine end to end: real DDP (gloo, 2 processes), kill -9 + --resume, damaged
checkpoints, NaN stop. ResNet-18 on 32-px crops of the small generated dataset keeps it quick."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

TINY = ["PRETRAIN.ARCH", "resnet18", "PRETRAIN.MOCO.K", "16", "PRETRAIN.MOCO.MLP_HIDDEN", "64",
        "PRETRAIN.MOCO.DIM", "32", "VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate",
        "DATA.PROPOSALS", "gt", "LOG.PRINT_PERIOD", "1"]


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _pretrain_cmd(synth_dir, out_dir, *opts):
    return [sys.executable, "-m", "objcrop.pretrain.train_net", "--opts", *TINY,
            "DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out_dir), *opts]


def _iterations(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_run_writes_checkpoint(synth_dir, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd = _pretrain_cmd(synth_dir, out, "PRETRAIN.EPOCHS", "1", "PRETRAIN.BATCH_SIZE", "8", "DATA.NUM_WORKERS", "0")
    cmd = launcher + cmd[1:]  # `-m objcrop.pretrain.train_net ...` under torchrun
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["world_size"] == 2 and results["iterations"] >= 1
    log = (out / "log.txt").read_text()
    assert "effective batch 8 = 2 process(es) x 4" in log and "gloo" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["arch"] == "resnet18" and "layer4.1.bn2.running_var" in final["backbone"]
    assert not any(k.startswith("fc.") for k in final["backbone"])
    assert any(n.endswith(".pth") for n in os.listdir(out / "checkpoints"))
    assert not (out / "log.txt.rank1").read_text().count("Traceback")


def test_kill9_mid_epoch_then_resume_neither_repeats_nor_skips(synth_dir, tmp_path):
    opts = ["PRETRAIN.EPOCHS", "3", "PRETRAIN.BATCH_SIZE", "4", "CHECKPOINT.PERIOD", "3", "DATA.NUM_WORKERS", "0"]
    reference = tmp_path / "uninterrupted"
    subprocess.run(_pretrain_cmd(synth_dir, reference, *opts), env=_env(2), check=True, capture_output=True, timeout=240)
    expected = _iterations(reference)
    total = expected[-1]["iteration"]
    per_epoch = total // 3
    assert per_epoch >= 3, "the test needs a checkpoint strictly inside an epoch"

    run = tmp_path / "killed"
    proc = subprocess.Popen(_pretrain_cmd(synth_dir, run, *opts), env=_env(2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # kill -9 right after the first mid-epoch checkpoint of the second epoch has been written
    target = next(i for i in range(per_epoch + 1, total) if i % 3 == 0 and i % per_epoch)
    marker = run / "checkpoints" / f"ckpt_{target:08d}.pth.sha256"
    deadline = time.time() + 200
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "results.json").exists()

    # damage the newest checkpoint: --resume must report it and fall back to the one before
    newest = sorted((run / "checkpoints").glob("ckpt_*.pth"))[-1]
    with open(newest, "r+b") as f:
        f.seek(os.path.getsize(newest) // 2)
        f.write(b"\0" * 4096)
    resumed = subprocess.run(_pretrain_cmd(synth_dir, run, *opts)[:3] + ["--resume"] + _pretrain_cmd(synth_dir, run, *opts)[3:],
                             env=_env(2), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert f"skipping checkpoint: {newest}: damaged" in log
    assert "resumed from" in log

    got = _iterations(run)
    assert [r["iteration"] for r in got] == list(range(1, total + 1))  # no step repeated or skipped
    # and the resumed run is the uninterrupted one: same data, RNG, queue, optimiser state
    for a, b in zip(got, expected):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["lr"] == pytest.approx(b["lr"])
    assert json.loads((run / "results.json").read_text())["iterations"] == total


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(synth_dir, tmp_path, monkeypatch):
    from objcrop.config import merge_config
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer, TrainingDiverged
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
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "nan" in results["error"]
    assert [n for n in os.listdir(out / "checkpoints") if n.endswith(".pth")] == ["ckpt_00000002.pth"]
    assert not (out / "model_final.pth").exists()
