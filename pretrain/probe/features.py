"""Frozen features of whole images, computed once per (weights, dataset, image size) and cached on disk."""
import hashlib
import os
import time
from typing import List

import numpy as np
import torch
from torch import nn

from objcrop.checkpoints import save_checkpoint

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's, as in pretraining


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


def cached_features(model, weights_id: str, arch: str, dataset: str, records, cfg, device, logger) -> torch.Tensor:
    """Features of `dataset` under these weights, from the disk cache when present (keyed by weights sha).

    `cfg` is the probe config (DATA.IMAGE_SIZE resolved, FEATURES.*)."""
    size = cfg.DATA.IMAGE_SIZE
    key = hashlib.sha256(f"{weights_id}|{arch}|{dataset}|{len(records)}|{size}".encode()).hexdigest()[:20]
    path = os.path.join(cfg.FEATURES.CACHE_DIR, f"feats_{key}.pt")
    if os.path.exists(path):
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("dataset") == dataset and cached["features"].shape[0] == len(records):
                logger.info(f"features of {dataset}: cached in {path}")
                return cached["features"]
        except Exception as e:  # a damaged cache entry is recomputed, never trusted
            logger.warning(f"{path}: unreadable feature cache ({type(e).__name__}); recomputing")
    t0 = time.perf_counter()
    feats = extract_features(model, records, size, cfg.FEATURES.BATCH_SIZE, cfg.FEATURES.NUM_WORKERS, device, dataset)
    logger.info(f"features of {dataset}: {tuple(feats.shape)} in {time.perf_counter() - t0:.1f}s -> {path}")
    save_checkpoint({"features": feats, "dataset": dataset, "weights": weights_id, "arch": arch}, path)
    return feats


def native_size(records: List[dict], cap: int = 224) -> int:
    """The median longer image side of the dataset, capped (224: the paper's probe resolution)."""
    sides = [max(int(r.get("height") or cap), int(r.get("width") or cap)) for r in records] or [cap]
    return int(min(cap, np.median(sides)))
