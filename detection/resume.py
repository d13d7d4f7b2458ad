"""A detection run killed at any point and resumed with --resume ends as an uninterrupted run would.

detectron2's DefaultTrainer alone does not: its checkpointer writes model_*.pth and last_checkpoint
in place (a kill while saving leaves a partial file under the final name), and a resumed run draws
its batches from the start of the data order again, with the random generators (ROI sampling,
flips) in their freshly seeded state. Here:

* checkpoint files and last_checkpoint are written to a temporary name and renamed (objcrop.io);
* every checkpoint carries the torch, numpy and Python random states (the `rng` checkpointable), and
  the training the run fine-tunes (`started_from`: a resume onto other weights is refused);
* on resume, the data loader is replayed up to the checkpoint's iteration (the batches are
  loaded and dropped, so the sampler and the augmentations' generators, in workers too, stand
  where they stood), and then the saved random states are restored;
* metrics.jsonl loses the lines of iterations after the checkpoint, which the resumed run writes again.

The replay costs a pass of data loading over the iterations already done (no model), the price
of an identical run; tests/test_faults_kill.py checks the identity.
"""
import contextlib
import json
import logging
import os
import random
import time
from typing import Tuple

import numpy as np
import torch

from objcrop.errors import CheckpointError
from objcrop.io import atomic_path, write_text_atomic

logger = logging.getLogger("objcrop.detect")


class RngStates:
    """A checkpointable holding the process's random states; restored only when `restore()` is called."""

    def __init__(self):
        self._loaded = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        # plain lists and tensors: the checkpoint stays loadable by torch.load(weights_only=True)
        return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
                "python": [version, list(internal), gauss_next]}

    def load_state_dict(self, state: dict) -> None:
        self._loaded = state

    def restore(self) -> bool:
        """Set the loaded states (after the data replay); False when the checkpoint had none."""
        if self._loaded is None:
            return False
        s = self._loaded
        torch.set_rng_state(s["torch"])
        kind, keys, pos, has_gauss, gauss = s["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = s["python"]
        random.setstate((version, tuple(internal), gauss_next))
        return True


class _AtomicWrites:
    """detectron2's PathManager, except that files opened for writing appear only once complete."""

    def __init__(self, inner):
        self._inner = inner

    def open(self, path, mode="r", **kwargs):
        if "w" not in mode:
            return self._inner.open(path, mode, **kwargs)
        return _open_atomic(path, mode)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@contextlib.contextmanager
def _open_atomic(path, mode):
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


class StartedFrom:
    """A checkpointable naming the training a run fine-tunes: the sha256 of the checkpoint its .pkl was
    converted from. A checkpoint of a run that started from another training is not resumed into this
    one (a backbone trained again and converted to the same path, its killed fine-tuning rerun)."""

    def __init__(self, source_sha256):
        self.source_sha256 = source_sha256
        self.loaded = None  # what the resumed checkpoint says; None: it says nothing (older, or a fresh start)

    def state_dict(self) -> dict:
        return {"source_sha256": self.source_sha256}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state.get("source_sha256")

    def refuse_another(self, checkpoint_file: str, weights: str) -> None:
        refuse_another_training(checkpoint_file, "a checkpoint of a fine-tuning", self.loaded, self.source_sha256,
                                weights)


def refuse_another_training(path: str, what: str, held, now, weights: str) -> None:
    """`path` (a checkpoint, a finished results.json) holds `what` of the training `held` names; `weights`
    now come from the training `now` names (sha256s of the checkpoints their .pkl was converted from).
    Where both are known and differ, it is not continued, nor kept as this run's result."""
    if held and now and held != now:
        raise CheckpointError(
            f"{path}: {what} of another training (its weights were converted from a checkpoint with sha256 "
            f"{held[:12]}…, {weights} now from {now[:12]}…). Move or remove {os.path.dirname(path)} to fine-tune "
            f"these weights; nothing was run")


def make_resumable(trainer, source_sha256=None) -> Tuple[RngStates, StartedFrom]:
    """Atomic checkpoint writes, and in every checkpoint the random states and the training the run
    fine-tunes (`source_sha256`); returns both, for the resume."""
    checkpointer = trainer.checkpointer
    checkpointer.path_manager = _AtomicWrites(checkpointer.path_manager)
    rng, started = RngStates(), StartedFrom(source_sha256)
    checkpointer.add_checkpointable("rng", rng)
    checkpointer.add_checkpointable("started_from", started)
    return rng, started


def continue_where_stopped(trainer, rng: RngStates, metrics_path: str, replay: bool = True) -> None:
    """After resume_or_load: replay the data to trainer.start_iter (unless `replay` is off:
    cfg.OBJCROP.RESUME_REPLAY), restore the random states, and drop the metrics lines the resumed
    run will write again."""
    keep_metrics_until(metrics_path, trainer.start_iter)
    if trainer.start_iter >= trainer.max_iter:  # killed while evaluating: nothing left to train
        return
    if not replay:
        logger.info("OBJCROP.RESUME_REPLAY is off: the data order restarts (detectron2's own resume); the run "
                    "will differ from an uninterrupted one in its batches")
    else:
        _replay_batches(trainer, trainer.start_iter)
    if not rng.restore():
        logger.warning("the checkpoint holds no random states (written by an older objcrop): the resumed run "
                       "differs from an uninterrupted one in its random draws")


def _replay_batches(trainer, iterations: int) -> None:
    logger.info("resume: loading and dropping the %d batches trained before the checkpoint, so the data order "
                "continues where it stood (OBJCROP.RESUME_REPLAY False skips this)", iterations)
    start = time.perf_counter()
    batches = trainer._trainer._data_loader_iter  # detectron2 creates it lazily: the same iterator trains next
    for _ in range(iterations):
        next(batches)
    logger.info("resume: data replayed in %.1f s", time.perf_counter() - start)


def keep_metrics_until(path: str, iteration: int) -> None:
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError):  # a line cut by the kill
            pass
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(kept))
