"""Proof that a converted file loads: build the real detectron2 model, load, compare every tensor.

detectron2 loads a checkpoint whose names do not match with nothing but log
warnings (MoCo/VISSL users have fine-tuned from random weights that way). Here,
after `DetectionCheckpointer.load`, every backbone tensor of the model is
compared with the tensor it should hold; any missing, unexpected or different
one raises CheckpointError with the keys.
"""
import dataclasses
import logging
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from objcrop.convert.names import D2_BACKBONE_NAME
from objcrop.convert.writer import use_restricted_pkl_reader
from objcrop.errors import CheckpointError

DEFAULT_VERIFY_CONFIG = "voc/faster_rcnn_R_50_C4_24k.yaml"
# ResNet-18/34 have basic blocks, which the C4 head (a res5 bottleneck stage) cannot take: they are
# verified in the FPN model the study fine-tunes them in.
BASIC_BLOCK_VERIFY_CONFIG = "study/faster_rcnn_R_18_FPN_voc.yaml"
_LIST_LIMIT = 8
# Loggers through which detectron2/fvcore report unmatched keys while loading; the
# comparison below reports the same facts precisely, so their pages of warnings are muted.
_LOADING_LOGGERS = ("fvcore.common.checkpoint", "detectron2.checkpoint.c2_model_loading",
                    "detectron2.checkpoint.detection_checkpoint")

logger = logging.getLogger("objcrop.convert")


@dataclasses.dataclass
class Comparison:
    """Backbone tensors of a model compared with the ones it should hold (detectron2 names)."""

    compared: int
    missing: List[str]  # in the model's backbone, not in the expected set
    unexpected: List[str]  # expected, but no model parameter has that name
    different: List[str]  # name in both, shape or values differ ("name (why)")

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)

    def describe(self) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("different", self.different)):
            if keys:
                shown = ", ".join(keys[:_LIST_LIMIT]) + (f", … and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        return "; ".join(parts) if parts else f"all {self.compared} backbone tensors identical"


def model_backbone_tensors(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """{detectron2 backbone name: tensor} of a model, wherever it nests the ResNet.

    C4 models keep res5 in the ROI head (roi_heads.res5.*), FPN models keep the
    ResNet under backbone.bottom_up; `res5.norm` (the extra norm of MoCo's head) is
    not part of the pretrained ResNet and is not listed. BN's num_batches_tracked
    counters are skipped: pretraining checkpoints do not need to agree on them.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        m = D2_BACKBONE_NAME.search(key)
        if m and not key.endswith("num_batches_tracked"):
            name = m.group(1)
            if name in out:
                raise CheckpointError(f"model has two parameters named like {name}; cannot verify unambiguously")
            out[name] = value
    return out


def compare_backbone(model: torch.nn.Module, expected: Mapping[str, object]) -> Comparison:
    """Compare the model's backbone with `expected` ({detectron2 name: tensor or numpy array}), exactly."""
    actual = model_backbone_tensors(model)
    missing = sorted(set(actual) - set(expected))
    unexpected = sorted(set(expected) - set(actual))
    different = []
    for name in sorted(set(actual) & set(expected)):
        want = torch.as_tensor(np.asarray(expected[name]))
        have = actual[name].detach().cpu()
        if tuple(want.shape) != tuple(have.shape):
            different.append(f"{name} (shape {tuple(want.shape)} in file, {tuple(have.shape)} in model)")
        elif not torch.equal(want.to(have.dtype), have):
            diff = (want.to(torch.float64) - have.to(torch.float64)).abs().max().item()
            different.append(f"{name} (values differ, max |diff| {diff:.3g})")
    return Comparison(len(set(actual) & set(expected)), missing, unexpected, different)


def verification_model_for_depth(depth: int) -> Tuple[str, List[str]]:
    """(config file, overrides) of a detection model whose backbone has this ResNet depth (0: unknown)."""
    if depth in (18, 34):
        return BASIC_BLOCK_VERIFY_CONFIG, ([] if depth == 18 else ["MODEL.RESNETS.DEPTH", str(depth)])
    return DEFAULT_VERIFY_CONFIG, ([] if depth in (0, 50) else ["MODEL.RESNETS.DEPTH", str(depth)])


def build_model_for_verification(config_file: str, opts: Optional[List[str]] = None):
    """(model, cfg): the detectron2 model of `config_file` on CPU, one process (SyncBN as BN), in eval mode."""
    from detectron2.modeling import build_model

    from objcrop.convert.detectron2_model import adapt_norms_to_world_size, load_config

    cfg = load_config(config_file, opts).clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    adapt_norms_to_world_size(cfg, 1, logger)
    model = build_model(cfg)
    model.eval()
    return model, cfg


def load_into(model: torch.nn.Module, pkl_path: str) -> None:
    """Load a .pkl the way training does (DetectionCheckpointer, matching heuristics)."""
    from detectron2.checkpoint import DetectionCheckpointer

    levels = {name: logging.getLogger(name).level for name in _LOADING_LOGGERS}
    try:
        for name in _LOADING_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        # detectron2 unpickles a .pkl with plain pickle.load: read it with objcrop's restricted unpickler instead.
        use_restricted_pkl_reader(DetectionCheckpointer(model)).load(pkl_path)
    except CheckpointError:
        raise
    except Exception as e:  # detectron2 raises ValueError/KeyError/AssertionError on unusable files
        raise CheckpointError(f"{pkl_path}: detectron2's DetectionCheckpointer cannot load it: {type(e).__name__}: {e}") from e
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def verify_pkl(pkl_path: str, expected: Mapping[str, object], config_file: str = DEFAULT_VERIFY_CONFIG,
               opts: Optional[List[str]] = None, name: Optional[str] = None, source_arch: Optional[str] = None) -> Comparison:
    """Build the model of `config_file`, load `pkl_path`, require every backbone tensor to equal `expected`.

    `name` is how the file is called in messages (the final path while a temporary
    file is checked, or the original checkpoint); `source_arch` (e.g. "ResNet-18")
    adds the architecture mismatch to the message when that is the cause.
    """
    model, cfg = build_model_for_verification(config_file, opts)
    load_into(model, pkl_path)
    result = compare_backbone(model, expected)
    if not result.ok:
        depth = int(cfg.MODEL.RESNETS.DEPTH)
        hint = ""
        if source_arch and source_arch != f"ResNet-{depth}":
            hint = f" — it holds {source_arch} weights but the config builds a ResNet-{depth}"
        raise CheckpointError(f"{name or pkl_path}: does not load exactly into the detectron2 model of {config_file}"
                              f"{hint}: {result.describe()}")
    logger.info("verified %s against %s: %s", name or pkl_path, config_file, result.describe())
    return result
