"""COCO-format json + image folder → record dicts, validated (no detectron2 import).

Real files' quirks are repaired and counted, or refused with strict: see objcrop/datasets/quirks.py.
"""
import os
from typing import Dict, List, Optional, Tuple

from objcrop.datasets.quirks import Quirks
from objcrop.errors import DatasetError, ObjcropError
from objcrop.io import read_json


def _read(json_file: str) -> dict:
    try:
        data = read_json(json_file)
    except ObjcropError as e:
        raise DatasetError(str(e)) from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_file}: not a COCO instances file (no 'images' list)")
    return data


def read_categories(json_file: str) -> Tuple[List[str], Dict[int, int]]:
    """Class names in category-id order and the map dataset id → contiguous 0..K-1."""
    return _categories(_read(json_file), json_file)


def _categories(data: dict, json_file: str) -> Tuple[List[str], Dict[int, int]]:
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise DatasetError(f"{json_file}: no 'categories' list")
    cats = sorted(cats, key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{json_file}: duplicate category ids")
    return [c["name"] for c in cats], {cid: k for k, cid in enumerate(ids)}


def _box(bbox, img: dict, where: str, quirks: Quirks) -> Optional[List[float]]:
    """The annotation's XYWH box, clipped; None when it is dropped (objcrop/datasets/quirks.py)."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        raise DatasetError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: bbox must hold numbers, got {bbox!r}") from None
    xyxy = quirks.box(x, y, x + w, y + h, img["width"], img["height"], where)
    if xyxy is None:
        return None
    if quirks.strict:  # strict keeps the box exactly as written
        return [x, y, w, h]
    return [xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]]


def _segmentation(segm, img: dict, where: str, quirks: Quirks):
    """Valid polygons (>= 3 points) or a compressed RLE dict; None when no polygon is valid."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise DatasetError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        if list(segm["size"]) != [img["height"], img["width"]]:
            raise DatasetError(f"{where}: RLE size {list(segm['size'])} is not the image's "
                               f"[{img['height']}, {img['width']}] (height, width)")
        if isinstance(segm["counts"], list):  # uncompressed RLE (COCO crowd regions), as detectron2 converts it
            from pycocotools import mask as mask_util

            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm
    if not isinstance(segm, list):
        raise DatasetError(f"{where}: segmentation must be a polygon list or an RLE dict")
    return quirks.polygons(segm, where)


def _images(data: dict, json_file: str, image_root: str, check_files: bool) -> Dict[object, dict]:
    records: Dict[object, dict] = {}
    for img in data["images"]:
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise DatasetError(f"{json_file}: image {img.get('id', '?')} has no '{key}'")
        if img["id"] in records:
            raise DatasetError(f"{json_file}: duplicate image id {img['id']}")
        path = os.path.join(image_root, img["file_name"])
        if check_files and not os.path.isfile(path):
            raise DatasetError(f"{json_file}: image {img['id']}: file {path} not found")
        records[img["id"]] = {"file_name": path, "image_id": img["id"], "height": img["height"],
                              "width": img["width"], "annotations": []}
    return records


def _annotation(ann: dict, img: dict, id_map: Dict[int, int], json_file: str, quirks: Quirks) -> Optional[dict]:
    """One record annotation, or None when the annotation is dropped (degenerate box, no valid polygon)."""
    ann_id = ann.get("id", "?")
    if ann.get("category_id") not in id_map:
        raise DatasetError(f"{json_file}: annotation {ann_id} has unknown category id {ann.get('category_id')!r}")
    where = f"{json_file}: annotation {ann_id} (image {img['id']}, {img['file_name']})"
    bbox = _box(ann.get("bbox"), img, where, quirks)
    if bbox is None:
        return None
    out = {"bbox": bbox, "bbox_mode": 1, "category_id": id_map[ann["category_id"]],
           "iscrowd": int(ann.get("iscrowd", 0))}
    if "segmentation" in ann:
        segm = _segmentation(ann["segmentation"], img, where, quirks)
        if segm is None:
            return None
        out["segmentation"] = segm
    return out


def load_coco(json_file: str, image_root: str, check_files: bool = True,
              strict: bool = False) -> Tuple[List[dict], dict]:
    """Records and metadata of a COCO instances json whose `file_name`s are relative to `image_root`.

    Quirks of real files (boxes past the border, degenerate boxes, invalid polygons) are repaired and
    counted in one log line, or refused with `strict` (objcrop/datasets/quirks.py).
    """
    data = _read(json_file)
    classes, id_map = _categories(data, json_file)
    if not data["images"]:
        raise DatasetError(f"{json_file}: empty dataset (no images)")
    records = _images(data, json_file, image_root, check_files)
    images = {img["id"]: img for img in data["images"]}
    quirks = Quirks(json_file, strict)
    for ann in data.get("annotations", []):
        if ann.get("image_id") not in records:
            raise DatasetError(f"{json_file}: annotation {ann.get('id', '?')} refers to unknown image id "
                               f"{ann.get('image_id')!r}")
        out = _annotation(ann, images[ann["image_id"]], id_map, json_file, quirks)
        if out is not None:
            records[ann["image_id"]]["annotations"].append(out)
    for img_id, record in records.items():
        if not record["annotations"]:
            quirks.note("empty_image", f"image {img_id} ({images[img_id]['file_name']})")
    quirks.log()
    metadata = {"thing_classes": classes, "thing_dataset_id_to_contiguous_id": id_map,
                "evaluator_type": "coco", "json_file": os.path.abspath(json_file),
                "image_root": os.path.abspath(image_root), "quirks": quirks.summary()}
    return list(records.values()), metadata
