"""What the real view policies show: crop geometry of sampled view pairs against the objects.

`objcrop views stats` runs the policies themselves (`build_view_policy`, with boxes from ground
truth or a proposal store, exactly as pretraining gets them) and measures, per view and per pair:

* `holds_half_object`  the view holds >= 50 % of some object's pixels,
* `holds_whole_object` the view holds >= 95 % of some object's pixels,
* `object_cover`       the fraction of the view's area that object pixels cover,
* `same_object`        (pairs) both views hold >= 50 % of the same object — the positive pair
                       shows one object, the semantic consistency object-aware cropping is for.

This is the one implementation of view statistics (issue 19: `objcrop data crop-stats` used to
re-implement the views in numpy and drifted from the policies). Only the crop geometry is
measured: copy-paste changes pixels, not where the crops are. A crop of the released geometry
may reach past the image (the released code pads with black); the padding counts as view area
without objects.
"""
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from objcrop.datasets.boxes import annotation_xyxy, object_annotations
from objcrop.view_stats import format_view_stats  # noqa: F401  (the command's table; re-exported)

HALF, WHOLE = 0.5, 0.95


def object_masks(record: dict) -> np.ndarray:
    """[N, H, W] bool, one per object (crowd regions dropped, objcrop.datasets.boxes): the instance
    mask when the record has a segmentation, else the filled box."""
    h, w = int(record["height"]), int(record["width"])
    anns = object_annotations(record)
    masks = np.zeros((len(anns), h, w), bool)
    for k, a in enumerate(anns):
        segm = a.get("segmentation")
        if segm:
            from pycocotools import mask as mask_util

            rle = mask_util.frPyObjects(segm, h, w) if isinstance(segm, list) else segm
            rle = mask_util.merge(rle) if isinstance(rle, list) else rle
            masks[k] = mask_util.decode(rle).astype(bool)
        else:
            x0, y0, x1, y1 = annotation_xyxy(a)
            masks[k, int(max(0, np.floor(y0))):int(min(h, np.ceil(y1))), int(max(0, np.floor(x0))):int(min(w, np.ceil(x1)))] = True
    return masks


def integral_image(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    out[1:, 1:] = mask.cumsum(0).cumsum(1)
    return out


def pixels_inside(integral: np.ndarray, view) -> int:
    """Pixels of the mask inside the integer XYXY `view`; the part of the view outside the image holds none."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    x0, x1 = (min(max(int(v), 0), width) for v in (view[0], view[2]))
    y0, y1 = (min(max(int(v), 0), height) for v in (view[1], view[3]))
    return int(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])


def _view_measures(view, integrals, areas, union) -> Tuple[np.ndarray, float]:
    """(fraction of each object inside the view, fraction of the view covered by objects)."""
    held = np.array([pixels_inside(ii, view) / a for ii, a in zip(integrals, areas)])
    view_area = max(1, (view[2] - view[0]) * (view[3] - view[1]))
    return held, pixels_inside(union, view) / view_area


def policy_view_stats(records: Sequence[dict], policy, get_boxes: Callable[[dict], np.ndarray],
                      pairs_per_image: int = 10, seed: int = 0, progress: bool = True) -> Dict[str, float]:
    """Averages over `pairs_per_image` plans of `policy` on every record with annotated objects."""
    from tqdm import tqdm

    sums = {"half": [0, 0], "whole": [0, 0], "cover": [0.0, 0.0], "same": 0, "fallback": 0, "n": 0}
    used = 0
    for i, record in enumerate(tqdm(records, desc="view stats", unit="img", disable=not progress)):
        masks = object_masks(record)
        if len(masks) == 0:
            continue
        used += 1
        integrals = [integral_image(m) for m in masks]
        areas = [max(1, int(m.sum())) for m in masks]
        union = integral_image(masks.any(0))
        boxes = get_boxes(record)
        size = (int(record["height"]), int(record["width"]))
        for k in range(pairs_per_image):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i * 1009 + k)
            plan = policy.sample_boxes(size, boxes, g)
            held = []
            for v, crop in enumerate(plan.crops):
                h, cover = _view_measures(tuple(int(c) for c in crop), integrals, areas, union)
                sums["half"][v] += bool((h >= HALF).any())
                sums["whole"][v] += bool((h >= WHOLE).any())
                sums["cover"][v] += cover
                held.append(h >= HALF)
            sums["same"] += bool((held[0] & held[1]).any())
            sums["fallback"] += plan.fallback
            sums["n"] += 1
    n = max(1, sums["n"])
    out = {f"view{v + 1}_{name}": sums[key][v] / n for v in range(2)
           for key, name in (("half", "holds_half_object"), ("whole", "holds_whole_object"), ("cover", "object_cover"))}
    out.update(pair_same_object=sums["same"] / n, fallback_to_random=sums["fallback"] / n, pairs=sums["n"], images=used)
    return out
