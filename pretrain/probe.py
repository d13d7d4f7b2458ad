"""`objcrop probe`: linear-probe (mAP) and kNN evaluation of a frozen ResNet backbone.

The paper's protocol (Mishra et al. 2022, after MoCo): freeze the backbone, take global-average-
pooled res5 features, train one linear layer with a binary cross-entropy per class, and score
the test set by mAP (scikit-learn's average precision, averaged over the classes present in the
test set). Single-label datasets also get top-1. A kNN score (cosine similarity, k = 20 votes
weighted by exp(sim / 0.07), as in Wu et al. 2018) needs no training at all.

Features are computed once per (weights, dataset, image size) and cached on disk, so a sweep of
probe settings costs one forward pass. Accepted weights: an objcrop checkpoint (its `backbone`),
a torchvision ResNet state dict you supply (e.g. the supervised ImageNet baseline), or `random`.
"""
import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from typing import List, Optional, Tuple

# Set before torch loads OpenMP: on a CPU shared with data workers or other jobs, OpenMP threads that
# spin while they wait made a ResNet step 4-6x slower (measured under load, see the pretraining
# benchmark notes); waiting passively costs little on an idle machine. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

from objcrop.cli import run_stage_main
from objcrop.config import CfgNode, config_hash, write_config
from objcrop.errors import CheckpointError, DatasetError
from objcrop.io import append_jsonl, atomic_path, sha256_file, write_json_atomic
from objcrop.logger import setup_logger

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's, as in pretraining


# ---------------------------------------------------------------- weights
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


# ---------------------------------------------------------------- features
class WholeImages(torch.utils.data.Dataset):
    """Each image resized whole to size x size (no crop: every object stays in), normalised."""

    def __init__(self, records: List[dict], size: int):
        self.records, self.size = records, size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        from objcrop.datasets import read_image

        image = torch.tensor(read_image(self.records[i]["file_name"])).permute(2, 0, 1).contiguous()
        image = F.resize(image, [self.size, self.size], antialias=True)
        return F.normalize(image.float() / 255.0, MEAN, STD)


@torch.no_grad()
def extract_features(model: nn.Module, records: List[dict], size: int, batch_size: int, workers: int,
                     device: torch.device, desc: str) -> torch.Tensor:
    from tqdm import tqdm

    model.eval().to(device)
    loader = torch.utils.data.DataLoader(WholeImages(records, size), batch_size=batch_size, num_workers=workers)
    feats = [model(x.to(device)).float().cpu() for x in tqdm(loader, desc=desc, unit="batch", mininterval=1.0)]
    return torch.cat(feats)


def cached_features(model, weights_id: str, arch: str, dataset: str, records, args, device, logger) -> torch.Tensor:
    """Features of `dataset` under these weights, from the disk cache when present (keyed by weights sha)."""
    key = hashlib.sha256(f"{weights_id}|{arch}|{dataset}|{len(records)}|{args.image_size}".encode()).hexdigest()[:20]
    path = os.path.join(args.cache_dir, f"feats_{key}.pt")
    if os.path.exists(path):
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("dataset") == dataset and cached["features"].shape[0] == len(records):
                logger.info(f"features of {dataset}: cached in {path}")
                return cached["features"]
        except Exception as e:  # a damaged cache entry is recomputed, never trusted
            logger.warning(f"{path}: unreadable feature cache ({type(e).__name__}); recomputing")
    t0 = time.perf_counter()
    feats = extract_features(model, records, args.image_size, args.batch_size, args.num_workers, device, dataset)
    logger.info(f"features of {dataset}: {tuple(feats.shape)} in {time.perf_counter() - t0:.1f}s -> {path}")
    with atomic_path(path) as tmp:
        torch.save({"features": feats, "dataset": dataset, "weights": weights_id, "arch": arch}, tmp)
    return feats


def native_size(records: List[dict], cap: int = 224) -> int:
    """The median longer image side of the dataset, capped (224: the paper's probe resolution)."""
    sides = [max(int(r.get("height") or cap), int(r.get("width") or cap)) for r in records] or [cap]
    return int(min(cap, np.median(sides)))


# ---------------------------------------------------------------- scores
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


def train_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, epochs: int = 100, lr: float = 0.1,
                       batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0, log=None,
                       device: torch.device = torch.device("cpu")) -> nn.Module:
    """A linear layer on standardised features, BCE per class, SGD with momentum and a cosine schedule.

    Standardising (train-set mean/std) takes the place of the paper's lr of 30 on raw pooled features:
    the same optimum, reached with ordinary learning rates. Returns a CPU module mapping raw features to logits.
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], train_y.shape[1])
    torch.manual_seed(seed)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    linear.to(device)
    opt = torch.optim.SGD(linear.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    x = ((train_x - mean) / std).to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    with _threads_for(batch_size * x.shape[1] * train_y.shape[1] if device.type == "cpu" else 1 << 30):
        _fit(linear, x, train_y.to(device), loss_fn, opt, sched, epochs, batch_size, g, log)
    return nn.Sequential(Standardise(mean, std), linear.cpu()).eval()


@contextlib.contextmanager
def _threads_for(work: int):
    """One thread for tiny matrix products: thread wake-ups cost more than they save there, and on a
    busy machine multi-threaded tiny steps are many times slower."""
    before = torch.get_num_threads()
    if work < 4_000_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(linear, x, train_y, loss_fn, opt, sched, epochs, batch_size, g, log) -> None:
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        total = torch.zeros((), device=x.device)  # summed on the device: no sync per step
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size].to(x.device)
            loss = loss_fn(linear(x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        sched.step()
        if log:
            log(epoch, float(total) / len(x))


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


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


# ---------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", required=True,
                   help="objcrop checkpoint (model_final.pth), a torchvision ResNet state dict file, or 'random'")
    p.add_argument("--dataset-train", required=True, help="dataset name/spec the linear layer is trained on")
    p.add_argument("--dataset-test", required=True, help="dataset name/spec it is scored on")
    p.add_argument("--out", required=True, help="run directory for results.json, config.yaml, metrics.jsonl, log")
    p.add_argument("--arch", default="", help="ResNet to build (default: from the checkpoint; resnet50 for 'random')")
    p.add_argument("--image-size", type=int, default=0,
                   help="images are resized whole to this square size; 0 = the images' own size (median longer "
                        "side), at most 224 (small synthetic images are not blown up)")
    p.add_argument("--epochs", type=int, default=100, help="linear-classifier epochs (the paper: 100)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD lr on standardised features (cosine schedule)")
    p.add_argument("--probe-batch-size", type=int, default=256, help="linear-classifier batch (the paper: 256)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="linear-classifier weight decay")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN score")
    p.add_argument("--knn-t", type=float, default=0.07, help="temperature of the kNN vote weights exp(cos/T)")
    p.add_argument("--batch-size", type=int, default=64, help="feature-extraction batch")
    p.add_argument("--num-workers", type=int, default=2, help="feature-extraction DataLoader workers")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where features are computed")
    p.add_argument("--seed", type=int, default=0, help="seed of the classifier (and of 'random' weights)")
    p.add_argument("--cache-dir", default=os.path.join("output", "cache", "probe_features"),
                   help="feature cache, keyed by weights sha256 + dataset + image size")
    return p


def _probe_cfg(args) -> CfgNode:
    cfg = CfgNode()
    cfg.PROBE = CfgNode({k.upper(): v for k, v in vars(args).items()})
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    from objcrop.datasets import load_dataset, multilabel_targets

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    logger = setup_logger("objcrop.probe", args.out)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")

    model, arch, block, weights_id = load_backbone(args.weights, args.arch, args.seed)
    logger.info(f"backbone: {arch} from {args.weights} ({block.get('method')}); features on {device}")
    train_records, train_meta = load_dataset(args.dataset_train)
    test_records, test_meta = load_dataset(args.dataset_test)
    classes = train_meta.get("thing_classes") or []
    if not classes:
        raise DatasetError(f"{args.dataset_train}: no classes, nothing to probe")
    if (test_meta.get("thing_classes") or []) != classes:
        raise DatasetError(f"{args.dataset_test}: its classes differ from those of {args.dataset_train}")
    args.image_size = args.image_size or native_size(train_records)
    logger.info(f"images resized whole to {args.image_size}x{args.image_size}")
    cfg = _probe_cfg(args)  # the resolved settings, as run
    write_config(cfg, args.out)
    train_y = torch.from_numpy(multilabel_targets(train_records, len(classes)))
    test_y = torch.from_numpy(multilabel_targets(test_records, len(classes)))
    train_x = cached_features(model, weights_id, arch, args.dataset_train, train_records, args, device, logger)
    test_x = cached_features(model, weights_id, arch, args.dataset_test, test_records, args, device, logger)

    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    probe = train_linear_probe(train_x, train_y, args.epochs, args.lr, args.probe_batch_size, args.weight_decay,
                               args.seed, log=lambda e, loss: append_jsonl(metrics_path, {"iteration": e + 1, "loss": loss}),
                               device=device)
    with torch.no_grad():
        logits = probe(test_x)
    y = test_y.numpy()
    m_ap, n_scored = mean_average_precision(torch.sigmoid(logits).numpy(), y)
    knn_map, _ = mean_average_precision(knn_scores(train_x, train_y, test_x, args.knn_k, args.knn_t).numpy(), y)
    results = {"stage": "probe", "status": "ok", "pretrain": block, "seed": args.seed, "config_hash": config_hash(cfg),
               "dataset": args.dataset_test, "dataset_train": args.dataset_train, "mAP": m_ap, "knn_mAP": knn_map,
               "classes_scored": n_scored, "num_train": len(train_records), "num_test": len(test_records),
               "weights": args.weights, "weights_id": weights_id, "arch": arch,
               "features": feature_spectrum(test_x),
               "wall_time_s": round(time.perf_counter() - start, 3)}
    if is_single_label(train_y.numpy(), y):
        results["top1"] = float((logits.argmax(1) == test_y.argmax(1)).float().mean())
    write_json_atomic(os.path.join(args.out, "results.json"), results)
    logger.info("probe: " + json.dumps({k: results[k] for k in ("mAP", "knn_mAP", "top1", "features") if k in results}))
    return 0


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop probe"))
