"""detectron2 config for objcrop's detection runs: one `add_objcrop_config`, plus the
adjustments a run makes to fit the machines it actually has (norms, batch scaling).
"""
import logging
from typing import List, Optional

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as d2_get_cfg

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


def scale_to_world_size(cfg: CN, world_size: int, logger: logging.Logger, enabled: bool = True) -> Optional[float]:
    """Linear scaling rule (Goyal et al. 2017) when fewer devices hold the batch than the config assumes.

    The config states its batch for SOLVER.REFERENCE_WORLD_SIZE devices (MoCo's
    protocol: 16 images on 8 GPUs). Images per device stay fixed, so on N
    devices the batch becomes 16·N/8, the learning rate scales with it and
    iterations, LR steps, warmup, checkpoint and eval periods scale inversely:
    the same number of epochs. Returns the scale factor, None when nothing changed.
    cfg must be mutable; SOLVER.REFERENCE_WORLD_SIZE is set to world_size afterwards so
    detectron2's DefaultTrainer.auto_scale_workers does not scale a second time.
    """
    ref = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if ref == 0 or ref == world_size:
        return None
    if not enabled:
        logger.warning("!!! --no-scale: the config assumes %d devices but %d run it; keeping IMS_PER_BATCH=%d "
                       "(%.1f images per device instead of %.1f), lr and schedule unchanged.",
                       ref, world_size, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_BATCH / world_size,
                       cfg.SOLVER.IMS_PER_BATCH / ref)
        cfg.SOLVER.REFERENCE_WORLD_SIZE = 0
        return None
    from objcrop.errors import ConfigError

    if cfg.SOLVER.IMS_PER_BATCH % ref:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                          f"SOLVER.REFERENCE_WORLD_SIZE={ref}; cannot keep the images per device fixed")
    scale = world_size / ref
    before = (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS),
              cfg.SOLVER.WARMUP_ITERS)
    cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
    cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * scale
    cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
    cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
    cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(1, int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale)))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    cfg.SOLVER.REFERENCE_WORLD_SIZE = world_size
    after = (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS),
             cfg.SOLVER.WARMUP_ITERS)
    logger.warning("!!! LINEAR SCALING: the config assumes %d devices, this run has %d (x%g). "
                   "IMS_PER_BATCH %d -> %d, BASE_LR %g -> %g, MAX_ITER %d -> %d, STEPS %s -> %s, WARMUP_ITERS %d -> %d. "
                   "Pass --no-scale to keep the config's numbers.", ref, world_size, scale,
                   before[0], after[0], before[1], after[1], before[2], after[2], before[3], after[3], before[4], after[4])
    return scale
