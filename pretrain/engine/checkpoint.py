"""Resume checkpoints: atomic, hashed, pruned to the last k, verified on load.

`RUN/checkpoints/ckpt_<iteration>.pth` is written through objcrop.io.atomic_path (it appears whole
or not at all) and then `ckpt_<iteration>.pth.sha256` beside it. Loading walks from the newest
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

from objcrop.errors import CheckpointError
from objcrop.io import atomic_path, sha256_file, write_text_atomic

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
        path = self.path_for(iteration)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        write_text_atomic(path + ".sha256", sha256_file(path) + "\n")
        self._prune()
        return path

    def _prune(self) -> None:
        for _, path in self.list()[self.keep_last:]:
            for p in (path, path + ".sha256"):
                if os.path.exists(p):
                    os.remove(p)

    def remove_all(self) -> int:
        checkpoints = self.list()
        for _, path in checkpoints:
            for p in (path, path + ".sha256"):
                if os.path.exists(p):
                    os.remove(p)
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
