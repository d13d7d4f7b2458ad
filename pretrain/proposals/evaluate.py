"""Proposal quality: boxes per image, size histogram, recall at IoU thresholds against ground truth.

Recall@t (the standard proposal measure, Hosang et al. 2016): the fraction of ground-truth
objects (non-crowd) that some proposal of their image covers with IoU >= t.
"""
from typing import Any, Dict, Optional, Sequence

import numpy as np

from objcrop.pretrain.proposals.filters import pairwise_iou
from objcrop.datasets.boxes import gt_boxes
from objcrop.pretrain.proposals.store import ProposalStore

SIZE_BINS = (0, 16, 32, 64, 128, 256, 512, float("inf"))  # sqrt(box area) in pixels


def best_iou_per_gt(proposals: np.ndarray, gt: np.ndarray) -> np.ndarray:
    if len(gt) == 0:
        return np.zeros(0)
    if len(proposals) == 0:
        return np.zeros(len(gt))
    return pairwise_iou(gt, proposals).max(1)


def store_stats(store: ProposalStore, records: Optional[Sequence[dict]] = None,
                thresholds: Sequence[float] = (0.5, 0.7)) -> Dict[str, Any]:
    counts = store.boxes_per_image()
    boxes = np.asarray(store.all_boxes())
    side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
    hist, _ = np.histogram(side, bins=np.asarray(SIZE_BINS))
    stats: Dict[str, Any] = {
        "store": store.path, "method": store.meta.get("method"), "images": len(store), "boxes": store.num_boxes,
        "boxes_per_image": {"mean": float(counts.mean()) if len(counts) else 0.0,
                            "median": float(np.median(counts)) if len(counts) else 0.0,
                            "min": int(counts.min()) if len(counts) else 0, "max": int(counts.max()) if len(counts) else 0},
        "images_without_boxes": int((counts == 0).sum()),
        "size_histogram": [{"sqrt_area_px": [SIZE_BINS[i], SIZE_BINS[i + 1]], "count": int(c)} for i, c in enumerate(hist)],
        "has_masks": store.has_masks,
    }
    if records is not None:
        stats.update(recall(store, records, thresholds))
    return stats


def recall(store: ProposalStore, records: Sequence[dict], thresholds: Sequence[float] = (0.5, 0.7)) -> Dict[str, Any]:
    best, missing = [], 0
    for r in records:
        gt = gt_boxes(r)
        if not len(gt):
            continue
        found = store.get(r["image_id"], None)
        if found is None:
            missing += 1
            found = (np.zeros((0, 4), np.float32), None)
        best.append(best_iou_per_gt(found[0], gt))
    best_all = np.concatenate(best) if best else np.zeros(0)
    out: Dict[str, Any] = {"gt_objects": int(best_all.size), "images_not_in_store": missing}
    if best_all.size:
        for t in thresholds:
            out[f"recall@{t:g}"] = float((best_all >= t).mean())
        out["average_best_overlap"] = float(best_all.mean())
    return out


def format_stats(stats: Dict[str, Any]) -> str:
    bpi = stats["boxes_per_image"]
    lines = [f"store: {stats['store']}  (method {stats['method']}, masks: {'yes' if stats['has_masks'] else 'no'})",
             f"images: {stats['images']}  boxes: {stats['boxes']}  without boxes: {stats['images_without_boxes']}",
             f"boxes per image: mean {bpi['mean']:.2f}  median {bpi['median']:g}  min {bpi['min']}  max {bpi['max']}",
             "box size (sqrt of area, px):"]
    total = max(stats["boxes"], 1)
    for row in stats["size_histogram"]:
        lo, hi = row["sqrt_area_px"]
        label = f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}"
        lines.append(f"  {label:>9}: {row['count']:8d}  {'#' * int(round(40 * row['count'] / total))}")
    if "gt_objects" in stats:
        lines.append(f"ground truth: {stats['gt_objects']} objects"
                     + (f" ({stats['images_not_in_store']} images missing from the store)" if stats["images_not_in_store"] else ""))
        for key in sorted(k for k in stats if k.startswith("recall@")):
            lines.append(f"  {key}: {stats[key]:.3f}")
        if "average_best_overlap" in stats:
            lines.append(f"  average best overlap: {stats['average_best_overlap']:.3f}")
    return "\n".join(lines)
