"""The optimiser and the learning-rate schedule of pretraining: SGD or LARS, the linear scaling rule,
an optional linear warm-up and a half-cosine to 0, mixed precision on CUDA."""
import contextlib
import math

import torch

from objcrop.config import CfgNode
from objcrop.errors import ConfigError
from objcrop.records import cpuinfo_field


def scaled_lr(cfg: CfgNode) -> float:
    """The linear scaling rule: BASE_LR for BASE_BATCH_SIZE, proportional to the effective batch."""
    return cfg.PRETRAIN.BASE_LR * cfg.PRETRAIN.BATCH_SIZE / cfg.PRETRAIN.BASE_BATCH_SIZE


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a half-cosine from `peak` to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as BYOL and MoCo-v3 use it: per parameter,
    d = grad + weight_decay * w, scaled by the trust ratio eta * ||w|| / ||d|| (1 where either norm
    is 0), then SGD momentum: buf = momentum * buf + d; w -= lr * buf. A group with `lars` False is
    plain SGD momentum (BYOL excludes biases and BN parameters from adaptation and weight decay)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, lars: bool = True):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars=lars)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                d = w.grad.add(w, alpha=group["weight_decay"]) if group["weight_decay"] else w.grad.clone()
                if group["lars"]:
                    w_norm, d_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(d)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0), group["trust_coefficient"] * w_norm / d_norm,
                                        torch.ones_like(w_norm))
                    d.mul_(ratio)
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d  # the first step's buffer is the update itself, as torch's SGD
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                w.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


OPTIMIZERS = ("sgd", "lars")


def build_optimizer(method: torch.nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """PRETRAIN.OPTIMIZER over the trained parameters: SGD (weight decay on every parameter, as MoCo)
    or LARS (biases and BN parameters, the 1-D ones, neither adapted nor decayed, as BYOL)."""
    p = cfg.PRETRAIN
    params = [q for q in method.parameters() if q.requires_grad]
    if p.OPTIMIZER == "sgd":
        return torch.optim.SGD(params, lr=scaled_lr(cfg), momentum=p.MOMENTUM, weight_decay=p.WEIGHT_DECAY)
    if p.OPTIMIZER != "lars":
        raise ConfigError(f"PRETRAIN.OPTIMIZER: {p.OPTIMIZER!r} is not one of {OPTIMIZERS}")
    groups = [{"params": [q for q in params if q.ndim > 1]},
              {"params": [q for q in params if q.ndim <= 1], "weight_decay": 0.0, "lars": False}]
    return LARS(groups, lr=scaled_lr(cfg), momentum=p.MOMENTUM, weight_decay=p.WEIGHT_DECAY,
                trust_coefficient=p.LARS_TRUST_COEFFICIENT)


def uses_autocast(cfg: CfgNode, device: torch.device) -> bool:
    """Whether the step runs under autocast: PRETRAIN.AMP on CUDA; on the CPU only with PRETRAIN.AMP_CPU too.
    The one place this is decided: the optimisation, the memory format and the log all ask here."""
    p = cfg.PRETRAIN
    return bool(p.AMP) and (device.type == "cuda" or (device.type == "cpu" and bool(p.AMP_CPU)))


def uses_channels_last(cfg: CfgNode, device: torch.device) -> bool:
    """PRETRAIN.CHANNELS_LAST where it is faster: on CUDA, and on the CPU under bf16 autocast (oneDNN's
    bf16 convolutions gain more there than split BN's copies cost); a float32 CPU step stays contiguous."""
    return bool(cfg.PRETRAIN.CHANNELS_LAST) and (device.type == "cuda" or uses_autocast(cfg, device))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), where oneDNN's bf16 convolutions
    beat float32; elsewhere bf16 is emulated. torch >= 2.4 says so itself; older torch, from Linux's
    /proc/cpuinfo flags (elsewhere: False)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(probes):
        return any(probe() for probe in probes)
    flags = (cpuinfo_field("flags") or "").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def build_optimisation(method: torch.nn.Module, cfg: CfgNode, device: torch.device):
    """The optimiser (build_optimizer), the loss scaler (float16 only) and the autocast context:
    on CUDA with PRETRAIN.AMP; on the CPU with PRETRAIN.AMP_CPU too, in bfloat16 on a CPU that has it."""
    p = cfg.PRETRAIN
    optimizer = build_optimizer(method, cfg)
    use_amp = uses_autocast(cfg, device)
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(p.AMP_DTYPE)
    if use_amp and amp_dtype is None:
        raise ConfigError(f"PRETRAIN.AMP_DTYPE: {p.AMP_DTYPE!r} is not 'bfloat16' or 'float16'")
    if use_amp and device.type == "cpu":
        if amp_dtype != torch.bfloat16:
            raise ConfigError(f"PRETRAIN.AMP_CPU: autocast on the CPU runs in bfloat16 only; PRETRAIN.AMP_DTYPE is "
                              f"{p.AMP_DTYPE!r}")
        if not cpu_has_native_bf16():
            raise ConfigError("PRETRAIN.AMP_CPU: this CPU has no native bf16 (neither AMX nor AVX512-BF16), where "
                              "bf16 autocast is emulated and slower than float32; set PRETRAIN.AMP_CPU False")
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    return optimizer, scaler, autocast
