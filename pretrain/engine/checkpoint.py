"""Resume checkpoints: atomic, hashed, pruned to the last k, verified on load.

`RUN/checkpoints/ckpt_<iteration>.pth` is written through objcrop.checkpoints.save_checkpoint (it
appears whole or not at all, and identical runs write identical bytes) and then `ckpt_<iteration>.pth.sha256` beside it. Loading walks from the newest
checkpoint backwards and skips, with a warning, any that fails to load, lacks keys or whose bytes
no longer match the recorded hash. Everything stored is a tensor or a primitive container, so
`torch.load(..., weights_only=True)` reads it (RNG states become tensors, the config a YAML string).
"""
import logging
import os
import random
import re
from typing import List, Optional, Tuple

import numpy as np
import torch

from objcrop.config import config_changes
from objcrop.errors import CheckpointError, ConfigError
from objcrop.checkpoints import save_checkpoint
from objcrop.io import sha256_file, write_text_atomic
from objcrop.records import Provenance
from objcrop.pretrain.engine.hooks import HookBase
from objcrop.pretrain.engine.results import EXECUTION_ONLY_KEYS

RESUME_KEYS = ("objcrop_checkpoint", "arch", "method", "backbone", "model", "optimizer", "iteration",
               "epoch", "batch_in_epoch", "rng")
_NAME = re.compile(r"^ckpt_(\d+)\.pth$")


def rng_state() -> dict:
    """torch / CUDA / numpy / python RNG states as tensors and primitives."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint_file(path: str, required: Tuple[str, ...] = ()) -> dict:
    """torch.load(weights_only=True) with a CheckpointError naming the file on any failure."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises many exception types
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing keys {missing}")
    return state


def _remove_with_sidecar(path: str) -> None:
    """A checkpoint and its sha256 sidecar, whichever of the two exists. The sidecar goes first: a kill
    between the two removals then leaves a whole checkpoint without its hash (valid, and pruned by the
    next save or the resume's tidy), never a hash naming a file that is gone (tests/test_faults_pipeline_kill.py
    found one)."""
    for p in (path + ".sha256", path):
        if os.path.exists(p):
            os.remove(p)


class Checkpointer:
    def __init__(self, directory: str, keep_last: int = 3, logger: Optional[logging.Logger] = None):
        self.directory, self.keep_last = directory, max(1, keep_last)
        self.logger = logger or logging.getLogger("objcrop.pretrain")

    def path_for(self, iteration: int) -> str:
        return os.path.join(self.directory, f"ckpt_{iteration:08d}.pth")

    def list(self) -> List[Tuple[int, str]]:
        """(iteration, path) of every checkpoint present, newest first."""
        if not os.path.isdir(self.directory):
            return []
        found = [(int(m.group(1)), os.path.join(self.directory, f)) for f in os.listdir(self.directory)
                 for m in [_NAME.match(f)] if m]
        return sorted(found, reverse=True)

    def save(self, state: dict, iteration: int) -> str:
        """Write ckpt_<iteration>.pth and its sha256 sidecar, then prune. A write that fails (a full disk, a
        quota, a file-size limit) raises CheckpointError naming the file and the checkpoint still there:
        atomic_path leaves no partial file under a checkpoint's name, and pruning runs only after success."""
        path = self.path_for(iteration)
        try:
            save_checkpoint(state, path)
            write_text_atomic(path + ".sha256", sha256_file(path) + "\n")
        except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
            if os.path.exists(path):  # written, but its sidecar not: unrecorded, so not kept
                os.remove(path)
            raise CheckpointError(self._write_failure(path, e)) from e
        self._prune()
        return path

    def _write_failure(self, path: str, error: BaseException) -> str:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        previous = [p for _, p in self.list() if p != path]
        kept = f"the newest checkpoint is still {previous[0]}" if previous else "no earlier checkpoint exists"
        return (f"{path}: could not be written ({reason}); is the disk full, a quota or a file-size limit "
                f"reached? {kept}; free space and rerun with --resume")

    def _prune(self) -> None:
        for _, path in self.list()[self.keep_last:]:
            _remove_with_sidecar(path)

    def tidy_after_resume(self, loaded: str) -> None:
        """After resuming from `loaded`, what the save that wrote it would have finished: its sha256
        sidecar, and the older checkpoints pruned to keep_last. A kill between writing a checkpoint and
        pruning leaves both undone; a resume at the run's last iteration then trains nothing, saves
        nothing, and would keep a checkpoint an uninterrupted run does not (tests/test_pretrain_faults.py).
        Newer checkpoints (damaged ones, skipped) are left to be overwritten when training reaches them.
        Sidecars whose checkpoint is gone (left by a kill inside a removal when the checkpoint went
        first, as it did before _remove_with_sidecar's order) are removed too."""
        if not os.path.exists(loaded + ".sha256"):
            write_text_atomic(loaded + ".sha256", sha256_file(loaded) + "\n")
        for name in os.listdir(self.directory):
            checkpoint = name[:-len(".sha256")]
            if name.endswith(".sha256") and _NAME.match(checkpoint) \
                    and not os.path.exists(os.path.join(self.directory, checkpoint)):
                os.remove(os.path.join(self.directory, name))
        newest_first = [path for _, path in self.list()]
        older = newest_first[newest_first.index(loaded) + 1:] if loaded in newest_first else []
        for path in older[self.keep_last - 1:]:
            _remove_with_sidecar(path)

    def remove_all(self) -> int:
        checkpoints = self.list()
        for _, path in checkpoints:
            _remove_with_sidecar(path)
        return len(checkpoints)

    def verify(self, path: str) -> dict:
        """Load one checkpoint, checking its recorded hash (when present) and its keys."""
        sidecar = path + ".sha256"
        if os.path.exists(sidecar):
            with open(sidecar, "r", encoding="utf-8") as f:
                expected = f.read().strip()
            if expected and sha256_file(path) != expected:
                raise CheckpointError(f"{path}: damaged (sha256 differs from {os.path.basename(sidecar)})")
        return load_checkpoint_file(path, RESUME_KEYS)

    def load_newest_valid(self) -> Tuple[Optional[dict], Optional[str]]:
        """The newest checkpoint that verifies; damaged ones are reported and skipped."""
        for _, path in self.list():
            try:
                return self.verify(path), path
            except CheckpointError as e:
                self.logger.warning(f"skipping checkpoint: {e}")
        return None, None


def model_and_backbone(method: torch.nn.Module) -> dict:
    """The method's state dict and the backbone's (torchvision names, no `fc.*`) on the CPU.

    The backbone entries are the very tensors of the model entries, so torch.save stores them once.
    """
    model = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    prefix = method.BACKBONE_PREFIX
    backbone = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix) and not k.startswith(prefix + "fc.")}
    return {"model": model, "backbone": backbone}


def weights_record(trainer) -> dict:
    """What both a resume checkpoint and model_final.pth hold: weights, provenance, config, iteration."""
    p = trainer.cfg.PRETRAIN
    return {"objcrop_checkpoint": 1, "arch": p.ARCH, "method": p.METHOD, **model_and_backbone(trainer.method),
            "pretrain": trainer.provenance.to_dict(), "config": trainer.cfg.dump(), "iteration": trainer.state.iteration}


def restore_training_state(trainer, state: dict, path: str) -> None:
    """Load a resume checkpoint into the trainer's method, optimiser, loss scaler and the RNGs; a
    checkpoint of another method, architecture or stem is refused."""
    cfg, ctx, log = trainer.cfg, trainer.ctx, trainer.logger
    stem, wanted_stem = Provenance.from_dict(state.get("pretrain")).stem, trainer.provenance.stem
    if state["arch"] != cfg.PRETRAIN.ARCH or state["method"] != cfg.PRETRAIN.METHOD or stem != wanted_stem:
        raise ConfigError(f"{path}: checkpoint of {state['method']}/{state['arch']} ({stem} stem), but the config "
                          f"asks for {cfg.PRETRAIN.METHOD}/{cfg.PRETRAIN.ARCH} ({wanted_stem} stem)")
    trainer.method.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scaler and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    if state.get("config"):
        report_config_changes(log, path, state["config"], cfg.dump())
    if state.get("world_size", ctx.world_size) != ctx.world_size:
        log.info(f"resuming a {state['world_size']}-process run on {ctx.world_size} processes (same global batches)")


def report_config_changes(log, path: str, written_with: str, now: str) -> None:
    """Name every key a resumed run changes. Only EXECUTION_ONLY_KEYS changed: the run computes what it
    would have computed (an info line); any other key: the rest of the run trains another config (a warning)."""
    changes = config_changes(written_with, now)
    if not changes:
        return
    said = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
    if set(changes) <= set(EXECUTION_ONLY_KEYS):
        log.info(f"{path}: resuming with {said}: execution-only keys, the run computes the same")
    else:
        log.warning(f"{path}: was written with a different config ({said}); continuing with the current one")


def training_state(trainer) -> dict:
    """A resume checkpoint: weights, optimiser, loss scaler, position (the next batch to train), RNG
    and the run's counters. Everything is a tensor or a primitive (weights_only-loadable)."""
    s = trainer.state
    return {**weights_record(trainer), "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler else {},
            "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "world_size": trainer.ctx.world_size,
            "rng": rng_state(), "images_seen": s.images_seen,
            "train_time_s": s.train_time_s + trainer.session_seconds(),
            "recent_losses": [float(v) for v in s.recent_losses], "code_history": s.code_history}


class CheckpointHook(HookBase):
    """Resume checkpoints every CHECKPOINT.PERIOD iterations inside an epoch and at the end of every
    CHECKPOINT.EPOCH_PERIOD-th epoch (and the last), then model_final.pth (no optimiser state) when
    the run ends normally. Rank 0 only. A fresh start removes an earlier run's checkpoints."""

    def before_train(self):
        t = self.trainer
        if t.state.iteration == 0:
            removed = t.checkpointer.remove_all()
            if removed:
                t.logger.warning(f"starting afresh: removed {removed} checkpoint(s) of an earlier run in {t.output_dir}")

    def after_step(self):
        t, period = self.trainer, self.trainer.cfg.CHECKPOINT.PERIOD
        inside_epoch = t.state.batch_in_epoch < t.per_epoch  # the epoch's last batch is saved by after_epoch
        if period and t.state.iteration % period == 0 and inside_epoch:
            self._save()

    def after_epoch(self):
        t = self.trainer
        epochs_done = t.state.epoch
        if epochs_done % max(1, t.cfg.CHECKPOINT.EPOCH_PERIOD) == 0 or epochs_done == t.cfg.PRETRAIN.EPOCHS:
            self._save()

    def after_train(self):
        t = self.trainer
        if t.error is not None:
            return
        path = os.path.join(t.output_dir, "model_final.pth")
        save_checkpoint(weights_record(t), path)
        t.final_weights = path

    def _save(self):
        t = self.trainer
        path = t.checkpointer.save(training_state(t), t.state.iteration)
        t.logger.debug(f"checkpoint {path}")
