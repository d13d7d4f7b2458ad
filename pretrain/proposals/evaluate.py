"""Proposal quality: boxes per image, size histogram, recall at IoU thresholds against ground truth.

Recall@t (the standard proposal measure, Hosang et al. 2016): the fraction of ground-truth
objects (non-crowd) that some proposal of their image covers with IoU >= t.
On-object@t: the fraction of proposals that cover some ground-truth object of their image with
IoU >= t. It is what object-aware cropping cares about: a view pair is cut around a proposal drawn
from the image's boxes, so this is the chance that the crop is centred on an object rather than on a
background fragment. With --top-k both count only each image's k best-scored boxes, the ones
DATA.PROPOSALS_TOPK hands the pretraining (a method's ranking is then what decides).
"""
from typing import Any, Dict, Optional, Sequence

import numpy as np

from objcrop.pretrain.proposals.filters import pairwise_iou, ranked
from objcrop.datasets.boxes import gt_boxes
from objcrop.pretrain.proposals.store import ProposalStore

SIZE_BINS = (0, 16, 32, 64, 128, 256, 512, float("inf"))  # sqrt(box area) in pixels


def best_iou_of_each(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each of `boxes`, its best IoU with any of `others` (0 when there are none)."""
    if len(boxes) == 0:
        return np.zeros(0)
    if len(others) == 0:
        return np.zeros(len(boxes))
    return pairwise_iou(boxes, others).max(1)


def store_stats(store: ProposalStore, records: Optional[Sequence[dict]] = None,
                thresholds: Sequence[float] = (0.5, 0.7), top_k: int = 0) -> Dict[str, Any]:
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
        stats.update(recall(store, records, thresholds, top_k))
    return stats


def recall(store: ProposalStore, records: Sequence[dict], thresholds: Sequence[float] = (0.5, 0.7),
           top_k: int = 0) -> Dict[str, Any]:
    """Recall@t and on-object@t over `records` (module docstring), of each image's `top_k` best-scored
    boxes (0: all of them)."""
    best, hits, missing = [], [], 0
    for r in records:
        found = store.get(r["image_id"], None)
        if found is None:
            missing += 1
            found = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        boxes = ranked(*found)[0][:top_k] if top_k else np.asarray(found[0], np.float32).reshape(-1, 4)
        gt = gt_boxes(r)
        hits.append(best_iou_of_each(boxes, gt))  # per proposal: on an object?
        best.append(best_iou_of_each(gt, boxes))  # per object: covered?
    best_all = np.concatenate(best) if best else np.zeros(0)
    hits_all = np.concatenate(hits) if hits else np.zeros(0)
    out: Dict[str, Any] = {"gt_objects": int(best_all.size), "images_not_in_store": missing, "top_k": int(top_k),
                           "proposals_counted": int(hits_all.size)}
    if best_all.size:
        for t in thresholds:
            out[f"recall@{t:g}"] = float((best_all >= t).mean())
        out["average_best_overlap"] = float(best_all.mean())
    if hits_all.size:
        for t in thresholds:
            out[f"on_object@{t:g}"] = float((hits_all >= t).mean())
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
        counted = f"each image's {stats['top_k']} best-scored boxes" if stats["top_k"] else "every box"
        lines.append(f"against ground truth ({counted}, {stats['proposals_counted']} proposals):")
        for key in sorted(k for k in stats if k.startswith(("recall@", "on_object@"))):
            lines.append(f"  {key}: {stats[key]:.3f}")
        if "average_best_overlap" in stats:
            lines.append(f"  average best overlap: {stats['average_best_overlap']:.3f}")
    return "\n".join(lines)
