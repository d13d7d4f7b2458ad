"""Pretraining optimisation: the linear lr scaling rule, the warm-up + cosine schedule (and LARS)."""
import copy
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


# ---------------------------------------------------------------- LARS (BYOL's optimiser)
def _one_lars_step(w0, g, lr=0.5, wd=0.01, eta=1e-3, lars=True):
    from objcrop.pretrain.engine.optim import LARS

    w = torch.nn.Parameter(w0.clone())
    w.grad = g.clone()
    LARS([w], lr=lr, momentum=0.9, weight_decay=wd, trust_coefficient=eta, lars=lars).step()
    return w.detach()


def test_lars_scales_each_update_by_the_trust_ratio():
    """Guards against a LARS without the layer-wise ratio (plain SGD), one that takes the norm of the
    raw gradient instead of gradient + weight decay, or applies the decay after the scaling: the first
    step is lr * eta * ||w|| / ||g + wd w|| * (g + wd w)."""
    g_ = torch.Generator().manual_seed(0)
    w0, g = torch.randn(6, 5, generator=g_), 40 * torch.randn(6, 5, generator=g_)
    lr, wd, eta = 0.5, 0.01, 1e-3
    d = g + wd * w0
    expected = w0 - lr * eta * w0.norm() / d.norm() * d
    torch.testing.assert_close(_one_lars_step(w0, g, lr, wd, eta), expected, rtol=1e-6, atol=1e-7)
    # the step's size follows the weight's norm, not the gradient's: 10x the gradient, the same size
    small, large = _one_lars_step(w0, g, lr, 0.0, eta) - w0, _one_lars_step(w0, 10 * g, lr, 0.0, eta) - w0
    # (rel 1e-4: a step of ~0.1 % of w, read back as a float32 difference)
    assert float(small.norm()) == pytest.approx(float(large.norm()), rel=1e-4)
    assert float(small.norm()) == pytest.approx(lr * eta * float(w0.norm()), rel=1e-4)


def test_lars_momentum_and_zero_norms():
    """Guards against a momentum buffer that stores the unscaled gradient, and against NaN from a
    zero weight or gradient (the ratio is 1 there, as in BYOL's and MoCo-v3's LARS)."""
    from objcrop.pretrain.engine.optim import LARS

    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = LARS([w], lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.1)
    steps = []
    for _ in range(2):
        w.grad = torch.full_like(w, 2.0)
        before = w.detach().clone()
        ratio = 0.1 * before.norm() / w.grad.norm()
        steps.append(ratio * w.grad)
        opt.step()
    torch.testing.assert_close(w.detach(), torch.ones(3, 2) - steps[0] - (0.9 * steps[0] + steps[1]))
    zero = _one_lars_step(torch.zeros(4, 4), torch.ones(4, 4), lr=0.1, wd=0.0)
    torch.testing.assert_close(zero, torch.full((4, 4), -0.1))  # ratio 1: a plain SGD step
    assert torch.equal(_one_lars_step(torch.ones(4, 4), torch.zeros(4, 4), wd=0.0), torch.ones(4, 4))


def test_lars_leaves_biases_and_bn_out_of_adaptation_and_weight_decay():
    """Guards against LARS adapting or decaying biases and BN parameters (BYOL excludes them from
    both): build_optimizer puts every 1-D parameter in a plain-SGD group without weight decay, every
    weight matrix / kernel in the LARS group with PRETRAIN.WEIGHT_DECAY and the trust coefficient."""
    from objcrop.pretrain.engine.optim import LARS, build_optimizer

    cfg = _cfg("PRETRAIN.OPTIMIZER", "lars", "PRETRAIN.WEIGHT_DECAY", 1.5e-6, "PRETRAIN.LARS_TRUST_COEFFICIENT", 1e-3,
               "PRETRAIN.BATCH_SIZE", 512, "PRETRAIN.BASE_LR", 0.2, "PRETRAIN.BASE_BATCH_SIZE", 256)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    opt = build_optimizer(net, cfg)
    assert isinstance(opt, LARS)
    adapted, plain = opt.param_groups
    assert {id(p) for p in adapted["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert {id(p) for p in plain["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert adapted["lars"] and adapted["weight_decay"] == cfg.PRETRAIN.WEIGHT_DECAY
    assert adapted["trust_coefficient"] == cfg.PRETRAIN.LARS_TRUST_COEFFICIENT
    assert not plain["lars"] and plain["weight_decay"] == 0.0
    assert all(g["lr"] == pytest.approx(scaled_lr(cfg)) for g in opt.param_groups)
    b0, g = torch.randn(4), torch.randn(4)  # an excluded parameter takes a plain step: lr * grad
    torch.testing.assert_close(_one_lars_step(b0, g, lr=0.3, wd=0.0, lars=False), b0 - 0.3 * g)


def test_unknown_optimizer_is_a_config_error():
    from objcrop.errors import ConfigError
    from objcrop.pretrain.engine.optim import build_optimizer

    with pytest.raises(ConfigError, match="PRETRAIN.OPTIMIZER"):
        build_optimizer(torch.nn.Linear(2, 2), _cfg("PRETRAIN.OPTIMIZER", "adam"))


def test_byol_paper_preset_is_the_byol_recipe():
    """Guards against the BYOL paper preset drifting from BYOL's recipe (Grill et al. 2020, section 3.3 and
    appendix B): LARS with eta 1e-3, weight decay 1.5e-6, base lr 0.2 per 256 images, cosine after a
    10-epoch warm-up, target EMA from 0.996, blur 1.0 / 0.1, solarize 0.0 / 0.2, colour jitter
    0.4 / 0.4 / 0.2 / 0.1; and against it sharing a run directory with the SGD preset."""
    from objcrop.config import merge_config

    cfg = merge_config(get_pretrain_cfg, "pretrain/byol_r50_paper.yaml", [])
    sgd = merge_config(get_pretrain_cfg, "pretrain/byol_r50_objobjdilate_gt_200e_coco.yaml", [])
    p, v = cfg.PRETRAIN, cfg.VIEWS
    assert (p.METHOD, p.OPTIMIZER, p.LARS_TRUST_COEFFICIENT, p.WEIGHT_DECAY) == ("byol", "lars", 1e-3, 1.5e-6)
    assert (p.BASE_LR, p.BASE_BATCH_SIZE, p.WARMUP_EPOCHS, p.BYOL.BASE_MOMENTUM) == (0.2, 256, 10.0, 0.996)
    assert tuple(v.BLUR_PROB) == (1.0, 0.1) and tuple(v.SOLARIZE_PROB) == (0.0, 0.2)
    assert tuple(v.COLOR_JITTER) == (0.4, 0.4, 0.2, 0.1)
    assert sgd.PRETRAIN.OPTIMIZER == "sgd" and p.TAG and p.TAG != sgd.PRETRAIN.TAG


def test_lars_resumes_from_its_state_dict():
    """Guards against LARS state a checkpoint cannot carry (resume would restart the momentum): after a
    state_dict round trip into a fresh optimiser, the next step is the one the original would take."""
    from objcrop.pretrain.engine.optim import build_optimizer

    cfg = _cfg("PRETRAIN.OPTIMIZER", "lars", "PRETRAIN.WEIGHT_DECAY", 1.5e-6)
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    b = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x = torch.randn(8, 5)
    opt_a = build_optimizer(a, cfg)
    for _ in range(2):
        opt_a.zero_grad()
        a(x).pow(2).mean().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, cfg)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a checkpoint file: no shared buffers
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_byol_step_with_the_paper_presets_optimiser(one_torch_thread):
    """The preset's optimiser on the real method: build_optimisation gives LARS over BYOL's trained
    parameters only (not the target), and one step moves every online weight (the LARS group)."""
    from objcrop.config import merge_config
    from objcrop.pretrain.engine.optim import LARS, build_optimisation
    from objcrop.pretrain.methods import BYOL

    cfg = merge_config(get_pretrain_cfg, "pretrain/byol_r50_paper.yaml", [])
    torch.manual_seed(0)
    model = BYOL("resnet18", proj_hidden=16, proj_dim=8)
    opt, scaler, autocast = build_optimisation(model, cfg, torch.device("cpu"))
    assert isinstance(opt, LARS) and scaler is None
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    assert not trained & {id(p) for p in model.target.parameters()}
    before = [p.detach().clone() for p in model.online.parameters()]
    with autocast():
        out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    out["loss"].backward()
    opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, model.online.parameters()) if a.ndim > 1]
    assert moved and all(moved)  # (a bias just before BN has no gradient in exact arithmetic: not checked)


def test_channels_last_is_kept_for_cuda(caplog):
    """Guards against channels_last on CPU (PRETRAIN.CHANNELS_LAST, on in the CPU presets): there it made
    the step slower (split BN copies a channels_last activation to group it; bench_step.py --layouts),
    so the trainer builds a contiguous model, says why, and feeds it contiguous views; on CUDA it obeys."""
    import logging

    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    cfg = _cfg("PRETRAIN.ARCH", "resnet18", "PRETRAIN.BATCH_SIZE", 4, "PRETRAIN.MOCO.K", 8, "PRETRAIN.CHANNELS_LAST", True,
               "OUTPUT_DIR", "unused")
    trainer = PretrainTrainer(cfg, DistContext(), logging.getLogger("test.channels_last"))
    with caplog.at_level(logging.INFO, logger="test.channels_last"):
        method = trainer.build_method()
    conv = method.encoder_q.conv1.weight
    assert not trainer.channels_last and conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    assert "CHANNELS_LAST applies on CUDA and under bf16 autocast on the CPU" in caplog.text
    trainer.method = trainer.model = method
    from objcrop.pretrain.engine.optim import build_optimisation

    trainer.optimizer, trainer.scaler, trainer.autocast = build_optimisation(method, cfg, torch.device("cpu"))
    trainer.max_iter, trainer.peak_lr, trainer.warmup = 10, 0.01, 0
    seen = []
    method.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    trainer.run_step(x, x.clone(), torch.ones(4, dtype=torch.bool))
    assert seen == [True]
    cuda = PretrainTrainer(cfg, DistContext(), logging.getLogger("test"))
    cuda.ctx = DistContext(device=torch.device("cuda"))  # the decision only: nothing runs on it
    assert cuda.channels_last


def _cpu_amp_trainer(*opts):
    import logging

    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.optim import build_optimisation
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    cfg = _cfg("PRETRAIN.ARCH", "resnet18", "PRETRAIN.BATCH_SIZE", 4, "PRETRAIN.MOCO.K", 8, "OUTPUT_DIR", "unused", *opts)
    trainer = PretrainTrainer(cfg, DistContext(), logging.getLogger("test.cpu_amp"))
    trainer.method = trainer.model = trainer.build_method()
    trainer.optimizer, trainer.scaler, trainer.autocast = build_optimisation(trainer.method, cfg, torch.device("cpu"))
    trainer.max_iter, trainer.peak_lr, trainer.warmup = 10, 0.01, 0
    return trainer


def test_cpu_autocast_trains_in_bf16_and_channels_last():
    """Guards against PRETRAIN.AMP_CPU being ignored (the step in float32) or channels_last staying off
    under it, and against it leaking into default CPU runs: with it the convolutions compute in bf16 on a
    channels_last model and the weights move; without it (the default) the same step is float32 and
    contiguous. Needs a CPU with native bf16, which the option itself requires."""
    from objcrop.pretrain.engine.optim import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AMX / AVX512-BF16)")
    for opts, dtype, channels_last in ((("PRETRAIN.AMP_CPU", True, "PRETRAIN.CHANNELS_LAST", True), torch.bfloat16, True),
                                       (("PRETRAIN.CHANNELS_LAST", True), torch.float32, False)):
        trainer = _cpu_amp_trainer(*opts)
        assert trainer.channels_last == channels_last
        conv = trainer.method.encoder_q.conv1
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        seen = []
        conv.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
        before = conv.weight.detach().clone()
        x = torch.randn(4, 3, 32, 32)
        outcome = trainer.run_step(x, x.clone(), torch.ones(4, dtype=torch.bool))
        assert seen == [dtype] and math.isfinite(outcome.loss)
        assert conv.weight.dtype == torch.float32 and not torch.equal(before, conv.weight)  # fp32 master weights


def test_cpu_autocast_is_refused_where_it_cannot_pay(monkeypatch):
    """A CPU without native bf16 (emulated bf16 is slower than float32) and float16 on the CPU are
    ConfigErrors naming PRETRAIN.AMP_CPU, not silently slower or silently float32 runs."""
    from objcrop.errors import ConfigError
    from objcrop.pretrain.engine import optim

    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="PRETRAIN.AMP_CPU: this CPU has no native bf16"):
        _cpu_amp_trainer("PRETRAIN.AMP_CPU", True)
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    with pytest.raises(ConfigError, match="PRETRAIN.AMP_CPU: autocast on the CPU runs in bfloat16 only"):
        _cpu_amp_trainer("PRETRAIN.AMP_CPU", True, "PRETRAIN.AMP_DTYPE", "float16")
    _cpu_amp_trainer("PRETRAIN.AMP_CPU", True, "PRETRAIN.AMP", False)  # AMP off: float32, nothing to refuse
