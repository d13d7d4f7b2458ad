"""Box arithmetic for view sampling: growing, dilating and RandomResizedCrop inside a region.

Boxes are XYXY in pixels of the image (x right, y down). Crops are integer XYXY boxes
that lie inside the image, so that `F.resized_crop(image, top=y0, left=x0,
height=y1 - y0, width=x1 - x0)` reads only real pixels.

Randomness comes from one `torch.rand` call per crop with the caller's generator, so a
policy is deterministic under a seeded `torch.Generator` and costs few Python calls.
"""
import math
from typing import Optional, Sequence, Tuple

import torch

Box = Tuple[float, float, float, float]
IntBox = Tuple[int, int, int, int]

# RandomResizedCrop's number of rejection-sampling attempts (torchvision uses 10).
_ATTEMPTS = 10


def uniform(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def min_box_side(image_side: int, min_box_size: float, min_box_fraction: float) -> float:
    """Effective minimum box side on one axis (see VIEWS.MIN_BOX_SIZE / MIN_BOX_FRACTION)."""
    side = min(float(min_box_size), float(image_side))
    if min_box_fraction > 0:
        side = min(side, min_box_fraction * image_side)
    return max(side, 0.0)


def grow_box(box: Box, min_w: float, min_h: float, width: int, height: int) -> Box:
    """Grow `box` about its centre to at least min_w x min_h, then shift it into the image.

    Shifting (rather than clipping) keeps the grown size; the result still contains the
    part of the original box that lies inside the image.
    """
    x0, x1 = _grow_axis(box[0], box[2], min_w, width)
    y0, y1 = _grow_axis(box[1], box[3], min_h, height)
    return (x0, y0, x1, y1)


def _grow_axis(lo: float, hi: float, min_len: float, limit: int) -> Tuple[float, float]:
    lo, hi = max(0.0, lo), min(float(limit), hi)
    length = hi - lo
    if length >= min_len:
        return lo, hi
    centre = (lo + hi) / 2.0
    lo, hi = centre - min_len / 2.0, centre + min_len / 2.0
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > limit:
        lo, hi = lo - (hi - limit), float(limit)
    return max(0.0, lo), min(float(limit), hi)


def dilate_box(box: Box, fraction: float, width: int, height: int) -> Box:
    """Move each side out by `fraction` of the image size on its axis, clipped to the image."""
    dx, dy = fraction * width, fraction * height
    return (max(0.0, box[0] - dx), max(0.0, box[1] - dy), min(float(width), box[2] + dx), min(float(height), box[3] + dy))


def integer_region(box: Box, width: int, height: int) -> IntBox:
    """Smallest integer box holding `box`, inside the image and at least 1 px on each side."""
    x0 = min(max(int(math.floor(box[0])), 0), width - 1)
    y0 = min(max(int(math.floor(box[1])), 0), height - 1)
    x1 = max(min(int(math.ceil(box[2])), width), x0 + 1)
    y1 = max(min(int(math.ceil(box[3])), height), y0 + 1)
    return (x0, y0, x1, y1)


def random_resized_crop_in(region: IntBox, scale: Sequence[float], ratio: Sequence[float],
                           generator: Optional[torch.Generator], scale_eps: float = 0.01) -> IntBox:
    """torchvision's RandomResizedCrop box sampling, restricted to `region` (integer XYXY).

    `scale` is the crop's area as a fraction of the region's area; a lower bound of 0 (the
    paper's obj view) is raised to `scale_eps`. Falls back to the centred crop with the
    ratio clamped to `ratio`, as torchvision does, when no attempt fits.
    """
    rx0, ry0, rx1, ry1 = region
    w, h = rx1 - rx0, ry1 - ry0
    area = float(w * h)
    lo, hi = max(float(scale[0]), scale_eps), max(float(scale[1]), scale_eps)
    log_r0, log_r1 = math.log(ratio[0]), math.log(ratio[1])
    draws = torch.rand(_ATTEMPTS, 4, generator=generator).tolist()
    for u_scale, u_ratio, u_x, u_y in draws:
        target = area * uniform(lo, hi, u_scale)
        aspect = math.exp(uniform(log_r0, log_r1, u_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = rx0 + min(int(u_x * (w - cw + 1)), w - cw)
            y0 = ry0 + min(int(u_y * (h - ch + 1)), h - ch)
            return (x0, y0, x0 + cw, y0 + ch)
    return centre_crop_in(region, ratio)


def centre_crop_in(region: IntBox, ratio: Sequence[float]) -> IntBox:
    rx0, ry0, rx1, ry1 = region
    w, h = rx1 - rx0, ry1 - ry0
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, max(1, int(round(w / min(ratio))))
    elif in_ratio > max(ratio):
        ch, cw = h, max(1, int(round(h * max(ratio))))
    else:
        cw, ch = w, h
    x0, y0 = rx0 + (w - cw) // 2, ry0 + (h - ch) // 2
    return (x0, y0, x0 + cw, y0 + ch)


def box_iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def contains(outer: Box, inner: Box, tol: float = 1e-4) -> bool:
    return (outer[0] <= inner[0] + tol and outer[1] <= inner[1] + tol
            and outer[2] >= inner[2] - tol and outer[3] >= inner[3] - tol)
