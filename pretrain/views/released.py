"""The object-aware crop geometry of the released code, exactly (VIEWS.GEOMETRY "released").

Reference: object-cropping-ssl (Mishra et al., TMLR 2022), `datasets/openimages_dataset_bing.py`,
`OpenImages.extract_bb` and `__getitem__`, and `datasets/openimages_dataset_bing_object_scene.py`
for Obj-Scene. For one proposal box (pixels, XYXY):

1. the box is truncated to integers (`int(frac * W)` of the released normalised boxes);
2. dilated view only: each edge moves by the fixed fraction delta (`--dilation`, 0.2) of the
   coordinate itself, not of the image side: x0 - int(x0 * delta), x1 + int(x1 * delta), likewise
   y; nothing is clipped;
3. then, per axis, a side shorter than S (224, the crop size) grows by S / 2 on each side, with the
   released border handling: if x0 - S/2 > 0 then x0 -= S/2, else (x0, x1) = (0, S); then if
   x1 + S/2 < W then x1 += S/2, else x0 = x1 - S. The result may reach past the image (x0 < 0 or
   x1 > W, e.g. on images narrower than S); PIL's crop pads it with black, as
   torchvision's crop does here;
4. the object view is RandomResizedCrop(224, scale=(rescale_parameter, 1)) of the object region
   (rescale_parameter 0: torchvision rejects the zero-sized draws, no SCALE_EPS), the dilated view
   RandomResizedCrop(224, scale=(0.2, 1)) of the dilated region; Obj-Scene's object view is the
   object region resized to 224, its scene view RandomResizedCrop(0.2, 1) of the image. The views
   are swapped with p 0.5.

PIL rounds a crop box to integers (`round`), so regions are returned as rounded integers.
"""
from typing import Tuple

from objcrop.pretrain.views import geometry as geo

IntBox = geo.IntBox


def truncate_box(box: geo.Box) -> IntBox:
    """The released code's integer box: int() of each coordinate (truncation; coordinates are >= 0)."""
    return tuple(int(c) for c in box)


def dilate_box(box: IntBox, delta: float) -> IntBox:
    """Each edge moved out by delta times the coordinate itself: x0 - int(x0 * delta), x1 + int(x1 * delta)."""
    x0, y0, x1, y1 = box
    return (x0 - int(x0 * delta), y0 - int(y0 * delta), x1 + int(x1 * delta), y1 + int(y1 * delta))


def grow_axis(lo: float, hi: float, limit: int, size: int) -> Tuple[float, float]:
    """One axis of the small-box rule, with the released border handling (see the module docstring)."""
    if hi - lo < size:
        half = size / 2
        if lo - half > 0:
            lo = lo - half
        else:
            lo, hi = 0, size
        if hi + half < limit:
            hi = hi + half
        else:
            lo = hi - size
    return lo, hi


def grow_box(box: IntBox, width: int, height: int, size: int) -> IntBox:
    """The small-box rule on both axes, rounded to integers as PIL's crop rounds its box."""
    x0, x1 = grow_axis(box[0], box[2], width, size)
    y0, y1 = grow_axis(box[1], box[3], height, size)
    return tuple(int(round(c)) for c in (x0, y0, x1, y1))


def region(box: geo.Box, width: int, height: int, delta: float, size: int) -> Tuple[IntBox, IntBox]:
    """(the dilated box before growing, the region a view is cropped from): `extract_bb(dilation=delta)`.

    delta 0 is the object view's region (the released code dilates only when dilation > 0)."""
    base = truncate_box(box)
    dilated = dilate_box(base, delta) if delta > 0 else base
    return dilated, grow_box(dilated, width, height, size)
