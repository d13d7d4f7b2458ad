"""BYOL (Grill et al. 2020): an online network with a predictor regresses an EMA target network.

Used to show that object-aware cropping is not tied to contrastive learning. The study's presets
train it with SGD and a cosine schedule (the same optimiser for both methods keeps the comparison to
the crop policy); eval_configs/pretrain/byol_r50_paper.yaml has the paper's own recipe (LARS,
PRETRAIN.OPTIMIZER "lars"). The target EMA rate rises from BASE_MOMENTUM to 1 on a cosine, as in the paper.
"""
import copy
import math

import torch
from torch import nn

from objcrop.pretrain.methods.losses import byol_loss, embedding_spread
from objcrop.pretrain.models import build_resnet, mlp_head


def target_momentum(base: float, progress: float) -> float:
    """tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2: base at the start, 1 at the end."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1.0) / 2.0


class BYOL(nn.Module):
    """proj_hidden / proj_dim: projector and predictor sizes (4096 / 256); base_momentum: tau_base (0.996);
    stem: the ResNet stem (objcrop.pretrain.models.build_resnet; PRETRAIN.STEM)."""

    BACKBONE_PREFIX = "online."  # state-dict prefix of the exported ResNet
    SYNC_BN = True  # under DDP the trainer converts BN to SyncBN (on CUDA): BYOL's batches are per process

    def __init__(self, arch: str = "resnet50", proj_hidden: int = 4096, proj_dim: int = 256, base_momentum: float = 0.996,
                 stem: str = "imagenet"):
        super().__init__()
        self.arch, self.base_momentum = arch, base_momentum
        self.online, width = build_resnet(arch, stem=stem)
        self.online.fc = mlp_head(width, proj_hidden, proj_dim)  # the projector sits in fc, dropped on export
        self.predictor = mlp_head(proj_dim, proj_hidden, proj_dim)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad = False
        self.register_buffer("momentum", torch.tensor(base_momentum, dtype=torch.float64))

    @classmethod
    def from_config(cls, cfg, world_size: int, per_process_batch: int) -> "BYOL":
        c = cfg.PRETRAIN.BYOL
        return cls(cfg.PRETRAIN.ARCH, c.PROJ_HIDDEN, c.PROJ_DIM, c.BASE_MOMENTUM, cfg.PRETRAIN.STEM)

    def log_setup(self, logger, world_size: int) -> None:
        """State the target's EMA schedule once, at the start of a run."""
        logger.info(f"BYOL: target EMA rate from {self.base_momentum} to 1 on a cosine over the run")

    @property
    def backbone(self) -> nn.Module:
        return self.online

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict:
        p1 = self.predictor(self.online(x1)).float()
        p2 = self.predictor(self.online(x2)).float()
        with torch.no_grad():
            z1 = self.target(x1).float()
            z2 = self.target(x2).float()
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)  # symmetric: each view predicts the other's target
        return {"loss": loss, "embedding_spread": embedding_spread(p1)}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """EMA update of the target after each optimiser step; `progress` in [0, 1] sets tau."""
        tau = target_momentum(self.base_momentum, progress)
        self.momentum.fill_(tau)
        online = [p.detach() for p in self.online.parameters()]
        target = list(self.target.parameters())
        torch._foreach_lerp_(target, online, 1.0 - tau)  # tau t + (1 - tau) o in one pass over the weights
