"""What a dataset holds: counts, classes, boxes per image, object sizes (`objcrop data info`).

Only facts about the dataset live here. What crops of it see is measured by the real view
policies, `objcrop views stats` (objcrop.pretrain.views.stats): the core depends on no stage, so
view statistics cannot live in the core without re-implementing the views (issue 19).
"""
import math
from typing import Sequence

import numpy as np

from objcrop.datasets.boxes import annotation_xyxy

SIZE_BINS = (0.0, 0.05, 0.10, 0.20, 0.35, 0.50, 1.01)  # sqrt(box area / image area)


def dataset_info(records: Sequence[dict], metadata: dict) -> dict:
    classes = list(metadata.get("thing_classes") or [])
    per_image = [len(r.get("annotations", [])) for r in records]
    per_class = [0] * len(classes)
    sizes = []
    for r in records:
        for a in r.get("annotations", []):
            if 0 <= a["category_id"] < len(classes):
                per_class[a["category_id"]] += 1
            x0, y0, x1, y1 = annotation_xyxy(a)
            bw, bh = x1 - x0, y1 - y0
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
