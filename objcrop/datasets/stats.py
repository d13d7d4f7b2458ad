"""What a dataset holds, and what crops of it see.

`crop_stats` measures the premise of object-aware cropping on real records:
how often a view holds at least half (or nearly all) of some object, and how
much of the view objects cover, for

* `random`   a whole-image RandomResizedCrop, scale 0.2-1 (MoCo-v2's view),
* `gt-box`   the region of a ground-truth box (Obj-Obj's view 1 before its own crop),
* `gt-dilate` a RandomResizedCrop 0.2-1 inside a box dilated by 10-20 % of the
  image size (Obj-Obj+Dilate's view 2).

Object pixels come from the instance masks when the records carry them and
from the boxes otherwise.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SIZE_BINS = (0.0, 0.05, 0.10, 0.20, 0.35, 0.50, 1.01)  # sqrt(box area / image area)
VIEWS = ("random", "gt-box", "gt-dilate")


def object_masks(record: dict) -> np.ndarray:
    """[N, H, W] bool: instance masks from the segmentation when present, else filled boxes."""
    h, w = record["height"], record["width"]
    anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    masks = np.zeros((len(anns), h, w), bool)
    for k, a in enumerate(anns):
        segm = a.get("segmentation")
        if segm:
            from pycocotools import mask as mask_util

            rle = mask_util.frPyObjects(segm, h, w) if isinstance(segm, list) else segm
            rle = mask_util.merge(rle) if isinstance(rle, list) else rle
            masks[k] = mask_util.decode(rle).astype(bool)
        else:
            x, y, bw, bh = _xywh(a)
            masks[k, int(max(0, math.floor(y))):int(min(h, math.ceil(y + bh))),
                  int(max(0, math.floor(x))):int(min(w, math.ceil(x + bw)))] = True
    return masks


def _xywh(a: dict) -> List[float]:
    x0, y0, x1, y1 = a["bbox"]
    return [x0, y0, x1, y1] if a.get("bbox_mode", 1) == 1 else [x0, y0, x1 - x0, y1 - y0]


def random_resized_crop(rng: np.random.Generator, box: Tuple[int, int, int, int],
                        scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params inside `box` (x0, y0, x1, y1): a crop (x0, y0, x1, y1)."""
    bx0, by0, bx1, by1 = box
    width, height = bx1 - bx0, by1 - by0
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return bx0 + j, by0 + i, bx0 + j + w, by0 + i + h
    # Fallback, as torchvision: a central crop with the ratio clamped.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    i, j = (height - h) // 2, (width - w) // 2
    return bx0 + j, by0 + i, bx0 + j + w, by0 + i + h


def _box_pixels(a: dict, h: int, w: int) -> Tuple[int, int, int, int]:
    x, y, bw, bh = _xywh(a)
    x0, y0 = int(max(0, math.floor(x))), int(max(0, math.floor(y)))
    return x0, y0, int(min(w, max(x0 + 1, math.ceil(x + bw)))), int(min(h, max(y0 + 1, math.ceil(y + bh))))


def _sample_view(kind: str, rng: np.random.Generator, record: dict, boxes: List[Tuple[int, int, int, int]]):
    h, w = record["height"], record["width"]
    if kind == "random" or not boxes:
        return random_resized_crop(rng, (0, 0, w, h))
    x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
    if kind == "gt-box":
        return x0, y0, x1, y1
    dx, dy = rng.uniform(0.1, 0.2) * w, rng.uniform(0.1, 0.2) * h
    dilated = (int(max(0, x0 - dx)), int(max(0, y0 - dy)), int(min(w, x1 + dx)), int(min(h, y1 + dy)))
    return random_resized_crop(rng, dilated)


def integral_image(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    out[1:, 1:] = mask.cumsum(0).cumsum(1)
    return out


def pixels_inside(integral: np.ndarray, view) -> int:
    x0, y0, x1, y1 = view
    return int(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])


def crop_stats(records: Sequence[dict], samples_per_image: int = 10, seed: int = 0,
               views: Sequence[str] = VIEWS, progress: bool = True) -> Dict[str, dict]:
    """Per view kind: fraction of views holding >= 50 % / >= 95 % of some object, and mean object cover."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    sums = {k: {"half": 0, "whole": 0, "cover": 0.0, "n": 0} for k in views}
    used = 0
    for record in tqdm(records, desc="crop stats", unit="img", disable=not progress):
        masks = object_masks(record)
        if len(masks) == 0:
            continue
        used += 1
        h, w = record["height"], record["width"]
        anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        boxes = [_box_pixels(a, h, w) for a in anns]
        integrals = [integral_image(m) for m in masks]
        areas = [max(1, int(m.sum())) for m in masks]
        union = integral_image(masks.any(0))
        for kind in views:
            for _ in range(samples_per_image):
                view = _sample_view(kind, rng, record, boxes)
                held = max(pixels_inside(ii, view) / a for ii, a in zip(integrals, areas))
                view_area = max(1, (view[2] - view[0]) * (view[3] - view[1]))
                s = sums[kind]
                s["half"] += held >= 0.5
                s["whole"] += held >= 0.95
                s["cover"] += pixels_inside(union, view) / view_area
                s["n"] += 1
    out = {}
    for kind, s in sums.items():
        n = max(1, s["n"])
        out[kind] = {"holds_half_object": s["half"] / n, "holds_whole_object": s["whole"] / n,
                     "object_cover": s["cover"] / n, "views": s["n"]}
    out["images_with_objects"] = used
    return out


def format_crop_stats(stats: Dict[str, dict]) -> str:
    lines = [f"{'view':<12} {'>=50% of an object':>19} {'>=95% of an object':>19} {'object cover':>13} {'views':>7}"]
    for kind in VIEWS:
        if kind in stats:
            s = stats[kind]
            lines.append(f"{kind:<12} {s['holds_half_object']:>19.3f} {s['holds_whole_object']:>19.3f} "
                         f"{s['object_cover']:>13.3f} {s['views']:>7d}")
    return "\n".join(lines)


def dataset_info(records: Sequence[dict], metadata: dict) -> dict:
    classes = list(metadata.get("thing_classes") or [])
    per_image = [len(r.get("annotations", [])) for r in records]
    per_class = [0] * len(classes)
    sizes = []
    for r in records:
        for a in r.get("annotations", []):
            if 0 <= a["category_id"] < len(classes):
                per_class[a["category_id"]] += 1
            _, _, bw, bh = _xywh(a)
            sizes.append(math.sqrt(max(0.0, bw * bh) / (r["height"] * r["width"])))
    size_hist, _ = np.histogram(sizes, bins=SIZE_BINS) if sizes else (np.zeros(len(SIZE_BINS) - 1, int), None)
    count_hist = np.bincount(per_image) if per_image else np.zeros(1, int)
    labelled = sum(1 for r in records if r.get("labels"))
    return {"name": metadata.get("name"), "images": len(records), "classes": classes,
            "evaluator_type": metadata.get("evaluator_type"), "annotations": int(sum(per_image)),
            "boxes_per_image": {"mean": float(np.mean(per_image)) if per_image else 0.0,
                                "min": int(min(per_image, default=0)), "max": int(max(per_image, default=0)),
                                "histogram": count_hist.tolist()},
            "objects_per_class": dict(zip(classes, per_class)),
            "object_size_bins": list(SIZE_BINS), "object_size_histogram": size_hist.tolist(),
            "images_with_labels": labelled,
            "image_sizes": sorted({(r["height"], r["width"]) for r in records})[:5]}


def _bar(count: int, total: int, width: int = 30) -> str:
    return "#" * int(round(width * count / total)) if total else ""


def format_info(info: dict) -> str:
    lines = [f"dataset         {info['name']}", f"images          {info['images']}",
             f"classes         {len(info['classes'])}" + (f": {', '.join(info['classes'][:12])}"
                                                          + (", ..." if len(info['classes']) > 12 else "")
                                                          if info['classes'] else ""),
             f"evaluator       {info['evaluator_type']}", f"annotations     {info['annotations']}"]
    b = info["boxes_per_image"]
    lines.append(f"boxes/image     mean {b['mean']:.2f}, min {b['min']}, max {b['max']}")
    total = info["images"]
    for k, c in enumerate(b["histogram"]):
        if c:
            lines.append(f"  {k:>3} boxes    {c:>7}  {_bar(c, total)}")
    if info["annotations"]:
        lines.append("object size (sqrt(box area / image area))")
        edges = info["object_size_bins"]
        for lo, hi, c in zip(edges[:-1], edges[1:], info["object_size_histogram"]):
            lines.append(f"  {lo:>4.2f}-{min(hi, 1.0):<4.2f}    {c:>7}  {_bar(c, info['annotations'])}")
        lines.append("objects per class")
        for name, c in info["objects_per_class"].items():
            lines.append(f"  {name:<14}{c:>7}")
    if info["images_with_labels"]:
        lines.append(f"images with image-level labels  {info['images_with_labels']}")
    return "\n".join(lines)
