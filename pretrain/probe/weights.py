"""The frozen backbone a probe scores: an objcrop checkpoint, a torchvision ResNet file, or random init."""
import os
from typing import Tuple

import torch
from torch import nn

from objcrop.errors import CheckpointError
from objcrop.io import sha256_file


def _torchvision_state_dict(state: dict, path: str) -> dict:
    """The ResNet state dict inside a user's file: plain, or under state_dict/model, maybe `module.`-prefixed."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not any(k.startswith("layer1.") for k in state):
        raise CheckpointError(f"{path}: no torchvision ResNet keys (layer1.*) found; is this a ResNet state dict "
                              f"or an objcrop checkpoint?")
    return state


def load_backbone(weights: str, arch: str = "", seed: int = 0) -> Tuple[nn.Module, str, dict, str]:
    """(model, arch, pretrain block, weights id) for an objcrop checkpoint, a torchvision file or "random"."""
    from objcrop.pretrain.engine.checkpoint import load_checkpoint_file
    from objcrop.pretrain.models import build_resnet, infer_resnet_arch, load_backbone_weights

    if weights == "random":
        arch = arch or "resnet50"
        torch.manual_seed(seed)
        model, _ = build_resnet(arch)
        block = {"method": "random_init", "policy": "none", "proposals": "none", "epochs": 0, "arch": arch,
                 "dataset": "none", "seed": seed}
        return model, arch, block, f"random-{arch}-s{seed}"
    if not os.path.isfile(weights):
        raise CheckpointError(f"{weights}: weights file not found")
    state = load_checkpoint_file(weights)
    if state.get("objcrop_checkpoint"):
        if "backbone" not in state:
            raise CheckpointError(f"{weights}: objcrop checkpoint without a 'backbone' entry")
        state_dict, file_arch = state["backbone"], state.get("arch", "")
        block = dict(state.get("pretrain") or {"method": state.get("method", "unknown")})
    else:
        state_dict = _torchvision_state_dict(state, weights)
        file_arch = infer_resnet_arch(state_dict)
        block = {"method": "supervised", "policy": "none", "proposals": "none", "epochs": 0,
                 "arch": file_arch or arch, "dataset": os.path.basename(weights), "seed": seed}
    arch = arch or file_arch or "resnet50"
    model, _ = build_resnet(arch)
    load_backbone_weights(model, state_dict, weights)  # CheckpointError naming keys/shapes on a mismatch
    return model, arch, block, sha256_file(weights)[:16]
