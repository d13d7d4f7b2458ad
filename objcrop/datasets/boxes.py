"""Ground-truth boxes of a record: one crowd rule for every stage.

Crowd regions (COCO `iscrowd`, OpenImages `IsGroupOf`) are not objects: a crowd box covers many
instances, so it is no object box for object-aware cropping, no target for proposal recall and
no instance for the crop statistics. Every stage takes its ground-truth boxes from here, so
`DATA.PROPOSALS gt` (pretraining) and `objcrop proposals compute --method gt` see the same boxes.
"""
from typing import List, Sequence, Tuple

import numpy as np

XYWH_ABS, XYXY_ABS = 1, 0  # detectron2's BoxMode values, without importing detectron2


def xywh_to_xyxy(b: Sequence[float]) -> Tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in b[:4])
    return (x, y, x + w, y + h)


def annotation_xyxy(ann: dict) -> Tuple[float, float, float, float]:
    """One annotation's box as XYXY, whatever its `bbox_mode` (default XYWH_ABS, as COCO)."""
    if ann.get("bbox_mode", XYWH_ABS) == XYXY_ABS:
        return tuple(float(v) for v in ann["bbox"][:4])
    return xywh_to_xyxy(ann["bbox"])


def object_annotations(record: dict) -> List[dict]:
    """The record's annotations that are single objects (crowd / group-of regions dropped)."""
    return [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]


def gt_boxes(record: dict) -> np.ndarray:
    """float32 [n, 4] XYXY boxes of the record's objects (crowd regions dropped)."""
    return np.asarray([annotation_xyxy(a) for a in object_annotations(record)], np.float32).reshape(-1, 4)
