"""torchvision ResNet backbones, and reading/inspecting their state dicts.

The backbone is torchvision's ResNet with `fc` replaced: its state dict (minus `fc.*`) is exactly
what `objcrop convert` and `objcrop probe` consume, and what a user's torchvision checkpoint holds.
"""
import re
from typing import Dict, Tuple

import torch
import torchvision
from torch import nn

from objcrop.errors import CheckpointError, ConfigError
from objcrop.records import RESNET_STEMS, check_stem

# arch -> (blocks per stage, output width of res5); torchvision's definitions.
RESNETS = {
    "resnet18": ((2, 2, 2, 2), 512),
    "resnet34": ((3, 4, 6, 3), 512),
    "resnet50": ((3, 4, 6, 3), 2048),
    "resnet101": ((3, 4, 23, 3), 2048),
    "resnet152": ((3, 8, 36, 3), 2048),
}


def use_cifar_stem(model: nn.Module) -> None:
    """Replace torchvision's ImageNet stem (7x7 stride-2 conv1, 3x3 stride-2 max-pool: 4x smaller maps
    per side) by the CIFAR stem of small-image SSL: a 3x3 stride-1 conv1 and no max-pool, as in MoCo's
    own CIFAR-10 demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb, ModelBase). At 32-64 px
    the ImageNet stem leaves res5 with 1x1-2x2 maps. State-dict keys are unchanged (the max-pool has none)."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init of its convs
    model.maxpool = nn.Identity()


def build_resnet(arch: str, head: nn.Module = None, stem: str = RESNET_STEMS[0]) -> Tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet whose `fc` is `head` (default: identity), with the
    `stem` of RESNET_STEMS ("imagenet": torchvision's own; "cifar": `use_cifar_stem`).

    Returns the model and the width of its pooled res5 features (2048 for ResNet-50).
    """
    if arch not in RESNETS:
        raise ConfigError(f"PRETRAIN.ARCH: unknown architecture {arch!r}; choose one of {sorted(RESNETS)}")
    model = getattr(torchvision.models, arch)(weights=None)
    if check_stem(stem) == "cifar":
        use_cifar_stem(model)
    model.fc = head if head is not None else nn.Identity()
    return model, RESNETS[arch][1]


def mlp_head(in_dim: int, hidden: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """Linear-[BN]-ReLU-Linear: BYOL's projector and predictor, MoCo-v2's projection head (no BN in
    the paper; MoCo-v3 and SimCLR put BN there: standardising each hidden unit keeps one dominant
    input direction from mapping every input to nearly the same embedding)."""
    layers = [nn.Linear(in_dim, hidden)] + ([nn.BatchNorm1d(hidden)] if batch_norm else [])
    return nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def backbone_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The torchvision ResNet state dict without the head (`fc.*`), detached, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def infer_resnet_arch(state_dict: Dict[str, torch.Tensor]) -> str:
    """Name the torchvision ResNet a state dict came from, by its block counts and widths; "" if none."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state_dict for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        blocks.append(len(ids))
    bottleneck = "layer1.0.conv3.weight" in state_dict
    for arch, (counts, _) in RESNETS.items():
        if tuple(blocks) == counts and bottleneck == (arch not in ("resnet18", "resnet34")):
            return arch
    return ""


def load_backbone_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Load a head-less ResNet state dict strictly; any missing, unexpected or mis-shaped key is a
    CheckpointError naming `source` and the first offending keys (e.g. a ResNet-18 file into a ResNet-50)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(set(given) & set(expected)) if given[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        arch = infer_resnet_arch(given) or "an unknown architecture"
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (file vs model), e.g. {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(f"{source}: weights look like {arch}, not the requested model: " + "; ".join(parts))
    model.load_state_dict(given, strict=False)
