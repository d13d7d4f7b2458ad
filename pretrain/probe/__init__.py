"""`objcrop probe`: linear-probe (mAP) and kNN evaluation of a frozen ResNet backbone.

The paper's protocol (Mishra et al. 2022, after MoCo): freeze the backbone, take global-average-
pooled res5 features, train one linear layer with a binary cross-entropy per class, and score
the test set by mAP (scikit-learn's average precision, averaged over the classes present in the
test set). Single-label datasets also get top-1. A kNN score (cosine similarity, k = 20 votes
weighted by exp(sim / 0.07), as in Wu et al. 2018) needs no training at all.

Two protocols (PROBE.PROTOCOL, recorded in results.json as "protocol"): `cached_features`, objcrop's
fast probe described here, and `main_lincls`, the paper's released one (lincls.py: a linear layer trained
end-to-end on RandomResizedCrop + flip views through the frozen backbone in eval mode, lr 30 x0.1 at
epochs 60 and 80, scored on Resize 256 + CenterCrop 224 views; eval_configs/probe/main_lincls.yaml).

Features are computed once per (weights, dataset, image size) and cached on disk, so a sweep of
probe settings costs one forward pass. Accepted weights: an objcrop checkpoint (its `backbone`),
a torchvision ResNet state dict you supply (e.g. the supervised ImageNet baseline), or `random`.

Modules: config (get_probe_cfg, the flags), weights (the backbone), features (whole-image features
and their cache), linear (the classifier), lincls (the main_lincls protocol), scores (mAP, kNN, spectrum),
cli (setup and main).
"""
import os

# Set before torch loads OpenMP: on a CPU shared with data workers or other jobs, OpenMP threads that
# spin while they wait made a ResNet step 4-6x slower (measured under load, see the pretraining
# benchmark notes); waiting passively costs little on an idle machine. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from objcrop.pretrain.probe.cli import build_parser, main, setup_cfg  # noqa: E402
from objcrop.pretrain.probe.config import get_probe_cfg  # noqa: E402
from objcrop.pretrain.probe.features import MEAN, STD, cached_features, extract_features, native_size  # noqa: E402
from objcrop.pretrain.probe.linear import Standardise, train_linear_probe  # noqa: E402
from objcrop.pretrain.probe.scores import (feature_spectrum, is_single_label, knn_scores,  # noqa: E402
                                           mean_average_precision)
from objcrop.pretrain.probe.weights import load_backbone  # noqa: E402

__all__ = ["build_parser", "main", "setup_cfg", "get_probe_cfg", "MEAN", "STD", "cached_features",
           "extract_features", "native_size", "Standardise", "train_linear_probe", "feature_spectrum",
           "is_single_label", "knn_scores", "mean_average_precision", "load_backbone"]
