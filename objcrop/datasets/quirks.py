"""Real datasets' quirks: repaired and counted by default, refused with `strict=True`.

Real annotation files (COCO, LVIS, OpenImages, VOC exports) hold a few boxes that stick out of the
image by rounding, boxes narrower or shorter than a pixel, and polygons with fewer than 3 points.
detectron2 and mmdetection load such files by clipping and dropping; so does objcrop by default:

* **clipped**: a box that overshoots the border by at most `border_tolerance(side)` = max(2 px,
  1 % of the side) is clipped to the border. Rounding and annotation tools that snap to the pixel
  grid overshoot by about a pixel, and boxes annotated on a resized copy by a fraction of the side
  (OpenImages' normalised coordinates stored with two decimals: 1 %, objcrop's old OpenImages
  limit). Farther out is no rounding but a wrong image size or coordinate convention (XYXY read
  as XYWH, normalised read as pixels): a structural fault.
* **degenerate**: a box whose width or height is below 1 px after clipping is dropped (no pixel
  of the image lies inside it; mmdetection drops the same).
* **invalid polygon**: a polygon with fewer than 3 points (or an odd coordinate count) is dropped,
  and so is an annotation left with none (detectron2's load_coco_json drops it too: a mask model
  cannot use it).
* images without annotations are kept, as detectron2 keeps them (its data loader filters them
  with DATALOADER.FILTER_EMPTY_ANNOTATIONS); they are counted, not repaired.

Each reader logs ONE summary line per dataset with the count of each kind and one example each
(file + annotation). `strict=True` repairs nothing: it keeps the
checks objcrop made before these repairs existed (a box of non-positive size, a box more than
STRICT_TOLERANCE px outside the image, an invalid polygon) and stops at the first with a
DatasetError naming file and annotation. Structural faults (unreadable file, unknown category,
a box wildly outside the image, an empty dataset) stop in both modes.

Every stage that loads a dataset has the switch: `objcrop data info --strict`, `objcrop proposals
compute --strict` and `objcrop probe --strict` (DATA.STRICT), pretraining's DATA.STRICT, `objcrop views
show|stats --strict`, `objcrop detect train --strict` (OBJCROP.STRICT_DATA); tests/test_strict_stages.py.
"""
import collections
import logging
from typing import Dict, List, Optional

from objcrop.errors import DatasetError

logger = logging.getLogger("objcrop.datasets")

TOLERANCE_PX, TOLERANCE_FRACTION = 2.0, 0.01  # clipped when the overshoot is <= max(px, fraction x side)
STRICT_TOLERANCE = 1.0  # strict mode (objcrop's earlier check): up to 1 px outside is accepted unchanged
MIN_SIDE = 1.0  # a box narrower or shorter than this after clipping is degenerate
# --help text of every stage's --strict flag (and config key comment), one wording for all
STRICT_HELP = ("refuse real datasets' quirks (a box past the border, a box under 1 px, a polygon under 3 points, "
               "an unreadable image in a folder) with an error naming the file, instead of repairing them and "
               "counting them in one log line")

# kind -> how the summary line says it (repairs first, then what is only counted)
KINDS = {"clipped": "box(es) clipped to the border",
         "degenerate": "degenerate box(es) dropped (w or h < 1 px)",
         "invalid_polygon": "invalid polygon(s) dropped (< 3 points)",
         "no_polygon": "annotation(s) dropped (no valid polygon left)",
         "unreadable_image": "unreadable image(s) skipped",
         "empty_image": "image(s) without annotations (kept)"}


def border_tolerance(side: float) -> float:
    return max(TOLERANCE_PX, TOLERANCE_FRACTION * side)


class Quirks:
    """Counts and examples of the quirks of one dataset; `strict` turns each repair into a DatasetError."""

    def __init__(self, source: str, strict: bool = False):
        self.source, self.strict = source, strict
        self.counts: Dict[str, int] = collections.Counter()
        self.examples: Dict[str, str] = {}

    def note(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, where)

    def box(self, x0: float, y0: float, x1: float, y1: float, width: float, height: float,
            where: str) -> Optional[List[float]]:
        """The XYXY box to keep (clipped), or None to drop it; DatasetError when it is wildly outside."""
        if self.strict:
            if x1 <= x0 or y1 <= y0:
                raise DatasetError(f"{where}: box [{x0}, {y0}, {x1}, {y1}] (XYXY) has non-positive size")
            if min(x0, y0) < -STRICT_TOLERANCE or x1 > width + STRICT_TOLERANCE or y1 > height + STRICT_TOLERANCE:
                raise DatasetError(f"{where}: box [{x0}, {y0}, {x1}, {y1}] (XYXY) lies outside the "
                                   f"{width}x{height} image by more than {STRICT_TOLERANCE:g} px (strict)")
            return [x0, y0, x1, y1]
        tx, ty = border_tolerance(width), border_tolerance(height)
        if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty or x0 > width + tx or y0 > height + ty:
            raise DatasetError(f"{where}: box [{x0}, {y0}, {x1}, {y1}] (XYXY) lies outside the {width}x{height} "
                               f"image by more than the {tx:g}/{ty:g} px rounding tolerance (wrong image size or "
                               "box format?)")
        clipped = [min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                   min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
        if clipped[2] - clipped[0] < MIN_SIDE or clipped[3] - clipped[1] < MIN_SIDE:
            self.note("degenerate", where)
            return None
        if clipped != [x0, y0, x1, y1]:
            self.note("clipped", where)
        return clipped

    def polygons(self, polygons: list, where: str) -> Optional[list]:
        """The valid polygons (>= 3 points); None when none is left (the annotation is dropped)."""
        valid = [p for p in polygons if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]
        if self.strict and (len(valid) < len(polygons) or not valid):
            raise DatasetError(f"{where}: segmentation has a polygon with fewer than 3 points, or none (strict)")
        if len(valid) < len(polygons):
            for _ in range(len(polygons) - len(valid)):
                self.note("invalid_polygon", where)
        if not valid:
            self.note("no_polygon", where)
            return None
        return valid

    def summary(self) -> Dict[str, int]:
        return {k: self.counts[k] for k in KINDS if self.counts.get(k)}

    def log(self) -> None:
        """One line: the count of each kind and its first example; nothing when there is nothing to say."""
        parts = [f"{self.counts[k]} {KINDS[k]} (e.g. {self.examples[k]})" for k in KINDS if self.counts.get(k)]
        if not parts:
            return
        repaired = any(k != "empty_image" for k in self.summary())
        tail = "; strict=True / --strict refuses them instead" if repaired else ""
        (logger.warning if repaired else logger.info)("%s: %s%s", self.source, "; ".join(parts), tail)
