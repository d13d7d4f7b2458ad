"""Pretraining optimisation: the linear lr scaling rule, the warm-up + cosine schedule (and LARS)."""
import math

import pytest
import torch

from objcrop.pretrain.config import get_pretrain_cfg
from objcrop.pretrain.engine.optim import lr_at, scaled_lr


def _cfg(*opts):
    cfg = get_pretrain_cfg()
    cfg.merge_from_list([str(o) for o in opts])
    return cfg


@pytest.mark.parametrize("batch", [32, 128, 256, 1024])
def test_scaled_lr_is_the_linear_rule_on_the_total_batch(batch):
    """Guards against a wrong lr scaling: square-root scaling, the ratio inverted (BASE_BATCH / BATCH),
    the base batch ignored, or BASE_LR returned unscaled. lr = BASE_LR x BATCH_SIZE / BASE_BATCH_SIZE."""
    cfg = _cfg("PRETRAIN.BATCH_SIZE", batch, "PRETRAIN.BASE_LR", 0.03, "PRETRAIN.BASE_BATCH_SIZE", 256)
    p = cfg.PRETRAIN
    assert scaled_lr(cfg) == pytest.approx(p.BASE_LR * p.BATCH_SIZE / p.BASE_BATCH_SIZE, rel=1e-12)
    doubled = _cfg("PRETRAIN.BATCH_SIZE", 2 * batch, "PRETRAIN.BASE_LR", 0.03, "PRETRAIN.BASE_BATCH_SIZE", 256)
    assert scaled_lr(doubled) == pytest.approx(2 * scaled_lr(cfg), rel=1e-12)  # linear, not sqrt
    at_base = _cfg("PRETRAIN.BATCH_SIZE", 256, "PRETRAIN.BASE_LR", 0.03, "PRETRAIN.BASE_BATCH_SIZE", 256)
    assert scaled_lr(at_base) == at_base.PRETRAIN.BASE_LR


def test_scaled_lr_counts_the_total_batch_not_the_per_process_one():
    """Guards against scaling by the per-process batch (BATCH_SIZE / W) or by BATCH_SIZE x W: PRETRAIN.BATCH_SIZE
    is the effective batch over all processes (the trainer splits it), so 2 processes x 64 and 1 x 128
    train with the same lr, the one the rule gives for 128."""
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    import logging

    cfg = _cfg("PRETRAIN.BATCH_SIZE", 128, "PRETRAIN.BASE_LR", 0.015, "PRETRAIN.BASE_BATCH_SIZE", 256, "OUTPUT_DIR", "unused")
    two = PretrainTrainer(cfg, DistContext(rank=0, world_size=2), logging.getLogger("test"))
    one = PretrainTrainer(cfg, DistContext(), logging.getLogger("test"))
    assert two.batch_per_process * 2 == one.batch_per_process == cfg.PRETRAIN.BATCH_SIZE
    assert scaled_lr(cfg) == pytest.approx(cfg.PRETRAIN.BASE_LR * cfg.PRETRAIN.BATCH_SIZE / cfg.PRETRAIN.BASE_BATCH_SIZE)


def test_lr_warms_up_linearly_then_follows_a_half_cosine_to_zero():
    """Guards against an off-by-one warm-up (lr 0 at step 0, or the peak reached one step late), a warm-up
    that restarts the cosine at the wrong step, and a full cosine (back up) instead of a half one."""
    peak, total, warmup = 0.4, 110, 10
    assert lr_at(0, total, peak, warmup) == pytest.approx(peak / warmup)  # first step already trains
    assert lr_at(4, total, peak, warmup) == pytest.approx(peak * 5 / warmup)
    assert lr_at(warmup - 1, total, peak, warmup) == pytest.approx(peak)  # the peak ends the warm-up
    assert lr_at(warmup, total, peak, warmup) == pytest.approx(peak)  # the cosine starts at the peak
    half = warmup + (total - warmup) // 2
    assert lr_at(half, total, peak, warmup) == pytest.approx(peak / 2)  # cos(pi/2) = 0: half the peak
    quarter = warmup + (total - warmup) // 4
    assert lr_at(quarter, total, peak, warmup) == pytest.approx(peak * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(total, total, peak, warmup) == pytest.approx(0.0, abs=1e-12)
    after = [lr_at(s, total, peak, warmup) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # never rises again after the warm-up


def test_lr_without_warmup_starts_at_the_peak():
    """Guards against a schedule that needs a warm-up (MoCo-v2 has none: step 0 trains at the peak)."""
    assert lr_at(0, 100, 0.03, 0) == pytest.approx(0.03)
    assert lr_at(50, 100, 0.03, 0) == pytest.approx(0.015)
