"""What the real view policies show: crop geometry of sampled view pairs against the objects.

`objcrop data crop-stats` emulates the three basic views on annotations alone; this module
runs the policies themselves (`build_view_policy`, with boxes from ground truth or a proposal
store, exactly as pretraining gets them) and measures, per view and per pair:

* `holds_half_object`  the view holds >= 50 % of some object's pixels,
* `object_cover`       the fraction of the view's area that object pixels cover,
* `same_object`        (pairs) both views hold >= 50 % of the same object — the positive pair
                       shows one object, the semantic consistency object-aware cropping is for.

Only the crop geometry is measured: copy-paste changes pixels, not where the crops are.
"""
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from objcrop.datasets.stats import integral_image, object_masks, pixels_inside


def _view_measures(view, integrals, areas, union) -> Tuple[np.ndarray, float]:
    """(fraction of each object inside the view, fraction of the view covered by objects)."""
    held = np.array([pixels_inside(ii, view) / a for ii, a in zip(integrals, areas)])
    view_area = max(1, (view[2] - view[0]) * (view[3] - view[1]))
    return held, pixels_inside(union, view) / view_area


def policy_view_stats(records: Sequence[dict], policy, get_boxes: Callable[[dict], np.ndarray],
                      pairs_per_image: int = 10, seed: int = 0, progress: bool = True) -> Dict[str, float]:
    """Averages over `pairs_per_image` plans of `policy` on every record with annotated objects."""
    from tqdm import tqdm

    sums = {"half": [0, 0], "cover": [0.0, 0.0], "same": 0, "fallback": 0, "n": 0}
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
                sums["half"][v] += bool((h >= 0.5).any())
                sums["cover"][v] += cover
                held.append(h >= 0.5)
            sums["same"] += bool((held[0] & held[1]).any())
            sums["fallback"] += plan.fallback
            sums["n"] += 1
    n = max(1, sums["n"])
    return {"view1_holds_half_object": sums["half"][0] / n, "view2_holds_half_object": sums["half"][1] / n,
            "view1_object_cover": sums["cover"][0] / n, "view2_object_cover": sums["cover"][1] / n,
            "pair_same_object": sums["same"] / n, "fallback_to_random": sums["fallback"] / n,
            "pairs": sums["n"], "images": used}


def format_view_stats(rows: Dict[str, Dict[str, float]]) -> str:
    """A markdown table, one row per (policy, boxes) label."""
    lines = ["| policy (boxes) | view 1 holds ≥50 % of an object | view 2 holds ≥50 % | both views: same object "
             "| object cover view 1 | object cover view 2 | pairs |",
             "|---|---|---|---|---|---|---|"]
    for label, s in rows.items():
        lines.append(f"| {label} | {s['view1_holds_half_object']:.3f} | {s['view2_holds_half_object']:.3f} | "
                     f"{s['pair_same_object']:.3f} | {s['view1_object_cover']:.3f} | {s['view2_object_cover']:.3f} | "
                     f"{s['pairs']} |")
    return "\n".join(lines)
