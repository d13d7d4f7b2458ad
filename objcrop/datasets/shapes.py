"""Filled geometric shapes for the embedded dataset: outlines, rasterising, and masks as polygons.

Every shape is defined in unit coordinates (its outline spans [-1, 1] on its
longer axis) as an outer polygon plus optional polygons cut out of it (the
hole of a ring, the bite of a crescent). The classes are chosen to differ in
outline, not in colour: the generator paints each instance a random colour.
"""
from typing import Dict, List, Tuple

import cv2
import numpy as np

# Sub-pixel precision of cv2.fillPoly (coordinates are fixed point with this many fraction bits).
_SHIFT = 4
# Masks are traced at this upsampling so polygon vertices sit within 1/8 px of the true boundary.
_TRACE_UPSAMPLE = 4


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer = _regular(points, 1.0, -np.pi / 2)
    inner_pts = _regular(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                     [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]], dtype=np.float64)


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
    return np.stack([x, y], axis=1)


def _arrow() -> np.ndarray:
    return np.array([[-1, -0.22], [0.15, -0.22], [0.15, -0.62], [1, 0], [0.15, 0.62],
                     [0.15, 0.22], [-1, 0.22]], dtype=np.float64)


def _normalise(outer: np.ndarray, holes: List[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Centre the outline's bounding box on 0 and scale its longer side to span [-1, 1]."""
    lo, hi = outer.min(0), outer.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    return (outer - centre) / half, [(h - centre) / half for h in holes]


def _build_shapes() -> Dict[str, Tuple[np.ndarray, List[np.ndarray]]]:
    raw = {
        "circle": (_regular(48), []),
        "square": (_regular(4, 1.0, np.pi / 4), []),
        "triangle": (_regular(3, 1.0, -np.pi / 2), []),
        "star": (_star(), []),
        "cross": (_cross(), []),
        "ring": (_regular(48), [_regular(48, 0.55)]),
        "hexagon": (_regular(6), []),
        # A disc with an off-centre bite: thick on one side, tapering to two horns.
        "crescent": (_regular(48), [_regular(48, 0.8) + np.array([0.5, 0.0])]),
        "heart": (_heart(), []),
        "arrow": (_arrow(), []),
    }
    return {name: _normalise(outer, holes) for name, (outer, holes) in raw.items()}


SHAPES = _build_shapes()
SHAPE_NAMES = tuple(SHAPES)


def place_shape(name: str, centre: Tuple[float, float], size: float, angle: float,
                aspect: float = 1.0) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Outline of shape `name` in pixel coordinates: `size` px across, rotated by `angle` radians."""
    outer, holes = SHAPES[name]
    c, s = np.cos(angle), np.sin(angle)
    transform = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0 / aspect]) * (size / 2)
    move = lambda pts: pts @ transform.T + np.asarray(centre, dtype=np.float64)  # noqa: E731
    return move(outer), [move(h) for h in holes]


def outline_extent(outer: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return outer.min(0), outer.max(0)


def rasterise(outer: np.ndarray, holes: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Boolean mask of the filled shape; pixel (x, y) covers [x, x+1) x [y, y+1)."""
    mask = np.zeros((height, width), np.uint8)
    # fillPoly samples pixel centres at integer coordinates, so shift by half a pixel.
    to_fixed = lambda pts: np.round((pts - 0.5) * (1 << _SHIFT)).astype(np.int32)  # noqa: E731
    cv2.fillPoly(mask, [to_fixed(outer)], 1, cv2.LINE_8, _SHIFT)
    if holes:
        cv2.fillPoly(mask, [to_fixed(h) for h in holes], 0, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _join_hole(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """One polygon for an outline with a hole: walk in to the hole along a zero-width bridge and back.

    COCO polygons cannot carry holes; rasterised with the even-odd rule (as
    pycocotools does) the bridge's two edges cancel and the hole stays empty.
    """
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]], axis=0)


def mask_to_polygons(mask: np.ndarray, min_area: float = 2.0) -> List[List[float]]:
    """COCO polygons ([[x0, y0, x1, y1, ...], ...]) tracing a boolean mask, holes joined in.

    Fragments smaller than `min_area` pixels are left out (an occluder can leave
    slivers too thin to carry a valid polygon).
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0 = xs.min() - 1, ys.min() - 1  # one pixel of margin so contours never touch the crop edge
    crop = np.zeros((ys.max() - y0 + 2, xs.max() - x0 + 2), np.uint8)
    crop[ys - y0, xs - x0] = 1
    up = cv2.resize(crop, None, fx=_TRACE_UPSAMPLE, fy=_TRACE_UPSAMPLE, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    eps = 1.5  # upsampled pixels: well under half an image pixel
    simplified = [cv2.approxPolyDP(c, eps, True).reshape(-1, 2).astype(np.float64) for c in contours]
    polygons = []
    for k, (_, _, child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue
        outer = simplified[k]
        if cv2.contourArea(contours[k]) < min_area * _TRACE_UPSAMPLE ** 2 or len(outer) < 3:
            continue
        while child != -1:  # siblings of the first child are the other holes of this outline
            hole = simplified[child]
            if len(hole) >= 3 and cv2.contourArea(contours[child]) >= min_area * _TRACE_UPSAMPLE ** 2:
                outer = _join_hole(outer, hole)
            child = hierarchy[child][0]
        # Upsampled pixel u has its centre at (u + 0.5) / k in image coordinates.
        pts = (outer + 0.5) / _TRACE_UPSAMPLE + np.array([x0, y0])
        polygons.append([float(v) for v in pts.reshape(-1)])
    return polygons
