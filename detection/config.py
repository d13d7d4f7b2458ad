"""Adjustments a detection run makes to fit the machines it actually has: the linear batch scaling rule.

The model's config itself (objcrop's keys, `load_config`, SyncBN -> BN for one process) is
objcrop.convert.detectron2_model, shared with the converter's verification.
"""
import logging
from typing import Optional

from detectron2.config import CfgNode as CN

from objcrop.errors import ConfigError


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
