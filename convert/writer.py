"""Writing and reading detectron2's checkpoint pickle.

detectron2's DetectionCheckpointer reads a `.pkl` as
{"model": {name: numpy array}, "__author__": str, "matching_heuristics": bool}.
Two fields decide how it is loaded (detectron2/checkpoint/detection_checkpoint.py):

* a `.pkl` without both "model" and "__author__" is taken for a Caffe2/Detectron1
  model and renamed with the Caffe2 rules; with "__author__" == "Caffe2" the same
  happens. Any other author loads the names as they are (MoCo's converter used
  "MOCO"; the MoCo issue #45 was a file missing this key).
* "matching_heuristics": True lets it match "res5.0.conv1.weight" to
  "roi_heads.res5.0.conv1.weight" (C4) or "backbone.bottom_up.res5..." (FPN) by
  name suffix, so one file serves every architecture.

Neither field says anything about colour order or normalisation: that is in the
detection config (INPUT.FORMAT RGB, torchvision PIXEL_MEAN/STD, STRIDE_IN_1X1 False).
"""
import pickle
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from objcrop.errors import CheckpointError
from objcrop.io import read_pickle_restricted, write_bytes_atomic

AUTHOR = "objcrop"


def to_detectron2_arrays(tensors: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> Dict[str, np.ndarray]:
    """{detectron2 name: float32 numpy array} for every mapped torchvision tensor."""
    out: Dict[str, np.ndarray] = {}
    for src, dst in mapping.items():
        t = tensors[src]
        # Half-precision or double checkpoints load as float32 parameters in detectron2 anyway.
        out[dst] = t.detach().cpu().to(torch.float32).numpy().copy() if t.is_floating_point() else t.numpy().copy()
    return out


def write_detectron2_pkl(path: str, arrays: Mapping[str, np.ndarray], pretrain: Optional[dict],
                         source: Optional[dict] = None) -> None:
    """Write the pickle atomically. `pretrain` goes under "__objcrop__", provenance under "__objcrop_source__"."""
    payload = {
        "model": dict(arrays),
        "__author__": AUTHOR,
        "matching_heuristics": True,
        "__objcrop__": dict(pretrain) if pretrain else {},
    }
    if source:
        payload["__objcrop_source__"] = dict(source)
    write_bytes_atomic(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def read_detectron2_pkl(path: str) -> dict:
    """Read a detectron2 `.pkl` without running code (objcrop.io's restricted unpickler); bad files raise
    CheckpointError naming the file (and, for a pickle naming anything but plain data, the global)."""
    data = read_pickle_restricted(path, CheckpointError, "detectron2 checkpoint")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a detectron2 checkpoint (a pickled {type(data).__name__}, not a dict)")
    if not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' dict, so detectron2 reads it as a Caffe2/Detectron1 file "
                              "(Caffe2 names, BGR input); convert the original checkpoint with `objcrop convert`")
    return data


def load_pkl_as_detectron2(path: str) -> dict:
    """What detectron2's DetectionCheckpointer._load_file returns for a `.pkl`, read with the restricted unpickler.

    Same layout rules as detectron2 0.6-0.7 (detection_checkpoint.py): a file with "model" and
    "__author__" is taken as it is; anything else is a Caffe2 / Detectron1 file ("blobs" unwrapped,
    "_momentum" entries dropped), so MSRA's R-50.pkl keeps working.
    """
    data = read_pickle_restricted(path, CheckpointError, "detectron2 checkpoint")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a detectron2 checkpoint (a pickled {type(data).__name__}, not a dict)")
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)
    return {"model": {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")}, "__author__": "Caffe2",
            "matching_heuristics": True}


def pkl_source_sha256(path: str) -> Optional[str]:
    """The sha256 of the checkpoint a .pkl was converted from (`write_detectron2_pkl` keeps it under
    "__objcrop_source__"); None for a .pkl objcrop did not write (MSRA's, a Caffe2 file)."""
    source = load_pkl_as_detectron2(path).get("__objcrop_source__")
    return source.get("sha256") if isinstance(source, dict) else None


def use_restricted_pkl_reader(checkpointer):
    """Make a detectron2 DetectionCheckpointer read `.pkl` files with the restricted unpickler; returns it.

    detectron2 itself opens `.pkl` files with plain `pickle.load`, so checking a file with
    read_detectron2_pkl first is not enough: the checkpointer would unpickle it again. Every
    DetectionCheckpointer objcrop builds goes through here (convert's verification; detection's
    trainer and --eval-only). Other files (.pth, URLs) keep detectron2's own reader.
    """
    own = checkpointer._load_file

    def _load_file(filename):
        if str(filename).endswith(".pkl"):
            return load_pkl_as_detectron2(filename)
        return own(filename)

    checkpointer._load_file = _load_file
    return checkpointer
