"""Scores of a probe: mAP, the kNN vote, top-1's applicability and the features' spectrum."""
from typing import Tuple

import numpy as np
import torch
from torch import nn

from objcrop.errors import DatasetError


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> Tuple[float, int]:
    """Macro average precision over the classes with at least one positive; (mAP, number of classes)."""
    from sklearn.metrics import average_precision_score

    present = np.flatnonzero(targets.sum(axis=0) > 0)
    if len(present) == 0:
        raise DatasetError("probe: the test set has no positive label for any class")
    aps = [average_precision_score(targets[:, c], scores[:, c]) for c in present]
    return float(np.mean(aps)), len(present)


def feature_spectrum(x: torch.Tensor) -> dict:
    """How many directions the frozen features use (a dimensional-collapse indicator).

    effective_rank: exp of the entropy of the normalised singular values of the centred features
    (Roy & Vetterli 2007): the feature width when every direction counts the same, 1 when one does.
    top_pc_share: the fraction of the variance along the first principal component.
    """
    centred = x.double() - x.double().mean(dim=0)
    s = torch.linalg.svdvals(centred)
    if float(s.sum()) == 0.0:
        return {"effective_rank": 0.0, "top_pc_share": 1.0}  # every image gives the same feature
    p = s / s.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"effective_rank": float(entropy.exp()), "top_pc_share": float(s[0] ** 2 / (s ** 2).sum())}


def is_single_label(*targets: np.ndarray) -> bool:
    return all(t.shape[0] > 0 and np.all(t.sum(axis=1) == 1) for t in targets)


def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Per-class scores: the exp(cos / T)-weighted share of each class among the k nearest train images."""
    train_n = nn.functional.normalize(train_x, dim=1)
    k = min(k, len(train_x))
    out = []
    for i in range(0, len(test_x), chunk):
        sim = nn.functional.normalize(test_x[i:i + chunk], dim=1) @ train_n.T
        top_sim, top_idx = sim.topk(k, dim=1)
        w = (top_sim / temperature).exp()
        out.append((w.unsqueeze(-1) * train_y[top_idx]).sum(1) / w.sum(1, keepdim=True))
    return torch.cat(out)
