"""Scenes of the embedded dataset: the generator's parameters, its variants and the rendering of
one image with its objects (objcrop/datasets/synth.py writes them as a dataset).

Why the scenes look the way they do: docs/DESIGN.md, "Small-scale data". Image i depends only
on (seed, i), so the same seed renders byte-identical images.
"""
import dataclasses
import functools
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from objcrop.datasets.shapes import SHAPE_NAMES, mask_to_polygons, place_shape, rasterise

@dataclasses.dataclass(frozen=True)
class SynthParams:
    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 4
    object_scale: Tuple[float, float] = (0.20, 0.35)  # object size as a fraction of the image side
    clutter: Tuple[int, int] = (2, 5)  # number of distractor strokes and specks
    clutter_contrast: float = 0.25  # how far clutter colours stray from the background (0..1)
    texture_strength: float = 0.10  # amplitude of the grey texture mixed into the background
    min_visible: float = 0.6  # an occluded object keeps at least this fraction of its area
    noise_sigma: float = 3.0  # per-pixel sensor noise, in grey levels
    jpeg_quality: int = 95
    classes: Tuple[str, ...] = SHAPE_NAMES
    background: str = "textured"  # "textured": per-image gradient, blotches, texture; "flat": one grey for all


VARIANTS: Dict[str, SynthParams] = {
    "default": SynthParams(),
    "hard": SynthParams(image_size=160, min_objects=2, max_objects=6, object_scale=(0.10, 0.18),
                        clutter=(8, 16), clutter_contrast=0.5, texture_strength=0.2, min_visible=0.5),
    # The study's data (docs/results.md): the learnable recipe as measured — 6 very distinct
    # outlines, 1-3 objects of 25-40 % of a 96-px side, mild clutter.
    "study": SynthParams(min_objects=1, max_objects=3, object_scale=(0.25, 0.40),
                         classes=("circle", "square", "triangle", "star", "cross", "ring")),
    # Its harder variant: the same objects in pixels (23-36 px) in a bigger, busier 128-px scene,
    # so a random crop frames an object less often while the objects stay big enough to learn.
    "study-hard": SynthParams(image_size=128, min_objects=1, max_objects=3, object_scale=(0.18, 0.28),
                              clutter=(6, 12), clutter_contrast=0.4, texture_strength=0.15,
                              classes=("circle", "square", "triangle", "star", "cross", "ring")),
    # The study's objects on one flat grey for every image, without texture or clutter: a view pair
    # can no longer be matched by its background, only by its objects (docs/results.md asks whether
    # that background is why no pretraining beats random init on `study`).
    "study-plain": SynthParams(min_objects=1, max_objects=3, object_scale=(0.25, 0.40), clutter=(0, 0),
                               texture_strength=0.0, background="flat",
                               classes=("circle", "square", "triangle", "star", "cross", "ring")),
}
BACKGROUNDS = ("textured", "flat")
FLAT_GREY = 128.0

_TEXTURES: Optional[List[np.ndarray]] = None


def _textures() -> List[np.ndarray]:
    """Grey textures bundled with scikit-image (no download), zero mean, unit std."""
    global _TEXTURES
    if _TEXTURES is None:
        from skimage import data

        _TEXTURES = []
        for name in ("brick", "grass", "gravel", "moon"):
            # Halved once (512 → 256 px) so that cutting a patch per image stays cheap.
            t = cv2.resize(getattr(data, name)(), (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
            _TEXTURES.append((t - t.mean()) / (t.std() + 1e-6))
    return _TEXTURES


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def _hsv_colour(rng: np.random.Generator, sat: Tuple[float, float], val: Tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    """Smooth per-image colour: a gradient between two colours, low-frequency blotches, mild texture;
    or, for `flat`, the same grey in every image."""
    s = p.image_size
    if p.background == "flat":
        return np.full((s, s, 3), FLAT_GREY, np.float32)
    c1 = _hsv_colour(rng, (0.1, 0.6), (0.3, 0.9))
    c2 = np.clip(c1 + rng.normal(0, 30, 3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(s)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
    img = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
    blotches = cv2.resize(rng.normal(0, 12, (4, 4, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    img += blotches
    tex = _textures()[rng.integers(len(_textures()))]
    crop = int(rng.integers(min(s // 2, tex.shape[0]), tex.shape[0] + 1))
    y0 = int(rng.integers(0, tex.shape[0] - crop + 1))
    x0 = int(rng.integers(0, tex.shape[1] - crop + 1))
    patch = cv2.resize(tex[y0:y0 + crop, x0:x0 + crop], (s, s), interpolation=cv2.INTER_LINEAR)
    img += (p.texture_strength * 255 * rng.uniform(0.5, 1.0)) * patch[..., None] * 0.5
    return img


def _draw_clutter(img: np.ndarray, rng: np.random.Generator, p: SynthParams) -> None:
    """Distractors that are no class: thin strokes, scribbles and specks far smaller than any object."""
    s = p.image_size
    for _ in range(int(rng.integers(p.clutter[0], p.clutter[1] + 1))):
        base = img[int(rng.integers(s)), int(rng.integers(s))]
        colour = tuple(float(v) for v in np.clip(base + rng.normal(0, 255 * p.clutter_contrast, 3), 0, 255))
        kind = rng.integers(3)
        if kind == 0:  # straight stroke
            a, b = rng.uniform(0, s, 2), rng.uniform(0, s, 2)
            cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, 1, cv2.LINE_AA)
        elif kind == 1:  # scribble: a short random walk
            pts = np.cumsum(rng.normal(0, s * 0.04, (6, 2)), axis=0) + rng.uniform(0, s, 2)
            cv2.polylines(img, [pts.astype(np.int32)], False, colour, 1, cv2.LINE_AA)
        else:  # speck
            r = max(1, int(round(rng.uniform(0.005, 0.02) * s)))
            cv2.circle(img, tuple(int(v) for v in rng.uniform(0, s, 2)), r, colour, -1, cv2.LINE_AA)


def _object_colour(rng: np.random.Generator, local_bg: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the background under the object."""
    best, best_d = None, -1.0
    for _ in range(12):
        c = _hsv_colour(rng, (0.35, 1.0), (0.25, 1.0))
        d = float(np.linalg.norm(c - local_bg))
        if d > best_d:
            best, best_d = c, d
        if d >= 90:
            break
    return best


def _sample_object(rng: np.random.Generator, p: SynthParams):
    """Class, outline and mask of one object placed fully inside the image."""
    s = p.image_size
    cls = int(rng.integers(len(p.classes)))
    size = rng.uniform(*p.object_scale) * s
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.85, 1.15)
    outer, holes = place_shape(p.classes[cls], (0.0, 0.0), size, angle, aspect)
    lo, hi = outer.min(0), outer.max(0)
    centre = np.array([rng.uniform(1 - lo[0], s - 1 - hi[0]), rng.uniform(1 - lo[1], s - 1 - hi[1])])
    outer, holes = outer + centre, [h + centre for h in holes]
    return cls, rasterise(outer, holes, s, s)


def _layout(rng: np.random.Generator, p: SynthParams) -> List[Tuple[int, np.ndarray]]:
    """Objects in drawing order (later ones on top); occlusion leaves each at least `min_visible` visible."""
    n = int(rng.integers(p.min_objects, p.max_objects + 1))
    placed: List[Tuple[int, np.ndarray]] = []
    visible: List[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(25):
            cls, mask = _sample_object(rng, p)
            if mask.sum() < 16:
                continue
            new_visible = [v & ~mask for v in visible]
            if all(nv.sum() >= p.min_visible * m.sum() for nv, (_, m) in zip(new_visible, placed)):
                placed.append((cls, mask))
                visible = new_visible + [mask]
                break
    return [(cls, vis) for (cls, _), vis in zip(placed, visible)]


def render_image(seed: int, index: int, p: SynthParams) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """Image `index` of a dataset with `seed`: RGB uint8 [S, S, 3] and (class, visible mask) per object."""
    rng = np.random.default_rng([seed, index])
    img = _background(rng, p)
    _draw_clutter(img, rng, p)
    objects = _layout(rng, p)
    for cls, vis in objects:
        ys, xs = np.nonzero(vis)
        local_bg = img[ys, xs].mean(0)
        colour = _object_colour(rng, local_bg)
        # A gentle shading ramp across the object so that it is not perfectly flat.
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xs - xs.mean()) + np.sin(angle) * (ys - ys.mean())) / max(1.0, np.ptp(xs) + np.ptp(ys))
        img[ys, xs] = colour * (1.0 + 0.3 * ramp[:, None])
    img += p.noise_sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _annotations(objects: List[Tuple[int, np.ndarray]]) -> List[dict]:
    """COCO-style boxes (XYWH, pixel corners), polygons and areas of the visible parts."""
    anns = []
    for cls, vis in objects:
        polygons = mask_to_polygons(vis)
        if not polygons:
            continue
        ys, xs = np.nonzero(vis)
        x0, y0 = int(xs.min()), int(ys.min())
        anns.append({"category": cls, "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                     "area": int(vis.sum()), "segmentation": polygons})
    return anns
