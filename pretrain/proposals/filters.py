"""Box filters applied to every method's proposals, in original image pixels.

Defaults follow SoCo (Wei et al. 2021): both sides at least 32 px, aspect ratio w/h in
[1/3, 3]. Then an optional relative-area range, non-maximum suppression and top-k by score.

The method's own ranking is its scores, highest first, ties in the order the method returned
the boxes (every method returns them best first; a stable sort keeps that). Top-k always counts
in that ranking. Where it is taken is a choice (`top_k_first`):

* False (objcrop's default, as before): the K best-ranked boxes among those that pass the
  filters and NMS, so an image keeps K boxes when K pass;
* True (the paper's reference mode, object-cropping-ssl's "top 10 BING boxes"): the K first
  boxes of the method's ranking, before anything else (clipping, size / aspect filters, NMS) can
  drop or reorder one; the filters then act on those K only, so fewer may remain.

SoCo's 32 px assume COCO's ~640-px images (1/20 of the side); on the 96-px embedded images
it would remove almost every object. So the minimum side is also capped at a fraction of the
image's shorter side (min_size_fraction, 0.1 by default; 0 turns the cap off).
"""
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class BoxFilter:
    min_size: float = 32.0                   # pixels, both sides
    min_size_fraction: float = 0.1           # ... but at most this fraction of the shorter image side
    aspect_ratio: Tuple[float, float] = (1.0 / 3.0, 3.0)  # w / h
    area: Tuple[float, float] = (0.0, 1.0)   # box area / image area
    nms_iou: Optional[float] = None          # None: no NMS
    top_k: Optional[int] = None              # None: keep all
    top_k_first: bool = False                # True: top-k of the method's raw ranking, before the filters

    def as_dict(self) -> dict:
        d = asdict(self)
        if not self.top_k_first:
            # stores written before this key existed hold no such field: their meta, and so the resume
            # check, stay the same for the default
            del d["top_k_first"]
        return d

    def min_side(self, width: int, height: int) -> float:
        if self.min_size_fraction > 0:
            return min(self.min_size, self.min_size_fraction * min(width, height))
        return self.min_size

    def __call__(self, boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
        if self.top_k_first and self.top_k is not None:
            boxes, scores = ranked(boxes, scores)
            boxes, scores = boxes[: self.top_k], scores[: self.top_k]
        boxes, scores = clip_boxes(boxes, scores, width, height)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        min_side = self.min_side(width, height)
        keep = (w >= min_side) & (h >= min_side)
        ratio = w / np.maximum(h, 1e-6)
        keep &= (ratio >= self.aspect_ratio[0] - 1e-6) & (ratio <= self.aspect_ratio[1] + 1e-6)
        rel_area = (w * h) / float(width * height)
        keep &= (rel_area >= self.area[0]) & (rel_area <= self.area[1] + 1e-9)
        boxes, scores = ranked(boxes[keep], scores[keep])
        if self.nms_iou is not None and len(boxes) > 1:
            keep = nms(boxes, self.nms_iou)
            boxes, scores = boxes[keep], scores[keep]
        if self.top_k is not None:
            boxes, scores = boxes[: self.top_k], scores[: self.top_k]
        return boxes.astype(np.float32), scores.astype(np.float32)


# (an aspect-ratio bound of 1e9 rather than inf keeps the meta plain json)
NO_FILTER = BoxFilter(min_size=0.0, min_size_fraction=0.0, aspect_ratio=(0.0, 1e9), area=(0.0, 1.0))


def ranked(boxes, scores) -> Tuple[np.ndarray, np.ndarray]:
    """The method's ranking: highest score first, ties in the method's order (stable: deterministic)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


def clip_boxes(boxes, scores, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Clip XYXY boxes to the image and drop empty ones."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS over boxes already sorted by descending score."""
    boxes = np.asarray(boxes, np.float64)
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    remaining = np.arange(len(boxes))
    keep = []
    while remaining.size:
        i = remaining[0]
        keep.append(i)
        rest = remaining[1:]
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        remaining = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
