"""The methods' losses as pure functions (each tested on its own in tests/test_pretrain_methods.py)."""
from typing import Tuple

import torch
import torch.nn.functional as F


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE logits of MoCo: column 0 is the positive key, columns 1..K the queued negatives.

    q, k: NxC, L2-normalised; queue: CxK, L2-normalised columns. Returns (logits Nx(1+K), labels N = 0).
    Computed in float32 whatever the inputs' dtype and with autocast off: under bf16 autocast the
    matmul would otherwise round every cosine to 8 bits of mantissa (steps of ~0.004 near 1, 0.02 in
    the logit after / T = 0.2), which blurs exactly the differences between the positive and the
    hardest negatives that InfoNCE learns from.
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # Nx1
        l_neg = torch.einsum("nc,ck->nk", q, queue)  # NxK
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, labels


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(InfoNCE loss, top-1 accuracy): the cross-entropy of picking the positive key among K+1, and
    how often the positive has the largest logit (no gradient). MoCoV2.forward calls this very function."""
    logits, labels = moco_logits(q, k, queue, temperature)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        acc_top1 = (logits.argmax(dim=1) == labels).float().mean()
    return loss, acc_top1


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss 2 - 2 cos(p, z), averaged over the batch; z is a target (no gradient).

    0 when prediction and target point the same way, 4 when opposite; invariant to their norms.
    """
    p = F.normalize(p, dim=-1)
    z = F.normalize(z.detach(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """How far apart a batch's embeddings lie (a collapse indicator, as in SimSiam): the
    per-dimension std of the L2-normalised embeddings, averaged over dimensions, times sqrt(dim).
    About 1 for embeddings spread over the sphere, 0 when every embedding is the same point."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean() * z.shape[1] ** 0.5
