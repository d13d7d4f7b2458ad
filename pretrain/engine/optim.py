"""The optimiser and the learning-rate schedule of pretraining: SGD, the linear scaling rule, an
optional linear warm-up and a half-cosine to 0, mixed precision on CUDA."""
import contextlib
import math

import torch

from objcrop.config import CfgNode
from objcrop.errors import ConfigError


def scaled_lr(cfg: CfgNode) -> float:
    """The linear scaling rule: BASE_LR for BASE_BATCH_SIZE, proportional to the effective batch."""
    return cfg.PRETRAIN.BASE_LR * cfg.PRETRAIN.BATCH_SIZE / cfg.PRETRAIN.BASE_BATCH_SIZE


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a half-cosine from `peak` to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimisation(method: torch.nn.Module, cfg: CfgNode, device: torch.device):
    """SGD over the trained parameters, the loss scaler (float16 only) and the autocast context."""
    p = cfg.PRETRAIN
    params = [q for q in method.parameters() if q.requires_grad]
    optimizer = torch.optim.SGD(params, lr=scaled_lr(cfg), momentum=p.MOMENTUM, weight_decay=p.WEIGHT_DECAY)
    use_amp = p.AMP and device.type == "cuda"
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(p.AMP_DTYPE)
    if use_amp and amp_dtype is None:
        raise ConfigError(f"PRETRAIN.AMP_DTYPE: {p.AMP_DTYPE!r} is not 'bfloat16' or 'float16'")
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device_type="cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    return optimizer, scaler, autocast
