"""The detectron2 model of objcrop's benchmark: objcrop's config keys, MoCo's ROI head, one-process norms.

Both stages that build a detectron2 model build this one: `objcrop convert` proves a converted
file loads into it (convert/verify.py), `objcrop detect train` fine-tunes it (detection/). It lives
in convert, the upstream stage, so that imports point one way: detection imports convert, never
the reverse (docs/ARCHITECTURE.md; tests/test_imports.py checks it).

    cfg = load_config("voc/faster_rcnn_R_50_C4_24k.yaml", ["SOLVER.MAX_ITER", "200"])   # frozen
    cfg = cfg.clone(); cfg.defrost(); adapt_norms_to_world_size(cfg, 1, logger)

Loading a config registers `Res5ROIHeadsExtraNorm` (MODEL.ROI_HEADS.NAME in the VOC/COCO C4
configs), so no caller has to remember the import.
"""
import logging
from typing import List, Optional

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as d2_get_cfg

import objcrop.convert.roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from objcrop.config import merge_config

# Every config key that chooses a norm layer by name.
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM",
             "MODEL.SEM_SEG_HEAD.NORM")
_SYNC_NORMS = ("SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")


def add_objcrop_config(cfg: CN) -> None:
    """objcrop's keys, added before any YAML is merged (detectron2's project idiom)."""
    cfg.OBJCROP = CN()
    # voc_det | coco_det | coco_instseg; "" infers it from the test set's evaluator and MODEL.MASK_ON.
    cfg.OBJCROP.TASK = ""
    # An empty MODEL.WEIGHTS means random init in detectron2. objcrop refuses that
    # unless the config (or --weights none) says it is meant: a forgotten weights
    # path must not quietly become a random-init baseline.
    cfg.OBJCROP.RANDOM_INIT = False
    # Take ROI_HEADS.NUM_CLASSES from the training set's thing_classes, so that
    # --dataset-train can point the same config at another dataset.
    cfg.OBJCROP.NUM_CLASSES_FROM_DATASET = True
    # metrics.jsonl gets one line every this many iterations (and at the last one).
    cfg.OBJCROP.METRICS_PERIOD = 20
    # Refuse real datasets' quirks (box past the border, box under 1 px, polygon under 3 points) with an
    # error naming the file, instead of repairing and counting them (objcrop/datasets/quirks.py);
    # `detect train --strict` sets it.
    cfg.OBJCROP.STRICT_DATA = False
    # On --resume, load (and drop) the batches the killed run had trained on, so that the data order
    # and the augmentations' random draws continue where they stood and the run ends as an
    # uninterrupted one would (objcrop/detection/resume.py). The price is a pass of data loading over
    # the iterations already done; False skips it and restarts the data order, as detectron2 does.
    cfg.OBJCROP.RESUME_REPLAY = True


def get_cfg() -> CN:
    cfg = d2_get_cfg()
    add_objcrop_config(cfg)
    return cfg


def load_config(config_file: Optional[str], opts: Optional[List[str]] = None) -> CN:
    """get_cfg() <- YAML (a path, or a file shipped in eval_configs/) <- opts; frozen. Bad keys → ConfigError."""
    return merge_config(get_cfg, config_file, opts)


def _get(cfg: CN, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: CN, dotted: str, value) -> None:
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def adapt_norms_to_world_size(cfg: CN, world_size: int, logger: logging.Logger) -> List[str]:
    """SyncBN (any synchronised norm) -> BN when a single process trains. cfg must be mutable.

    With one process there is nothing to synchronise with and plain BN computes
    the same statistics, without needing an initialised process group.
    """
    if world_size != 1:
        return []
    changes = []
    for key in NORM_KEYS:
        norm = _get(cfg, key)
        if norm in _SYNC_NORMS:
            _set(cfg, key, "BN")
            changes.append(f"{key}: {norm} -> BN")
    if changes:
        logger.info("norm layers adapted (one process, nothing to synchronise with): %s", "; ".join(changes))
    return changes
