"""COCO-format json + image folder → record dicts, validated (no detectron2 import)."""
import logging
import os
from typing import Dict, List, Tuple

from objcrop.errors import DatasetError, ObjcropError
from objcrop.io import read_json

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (rounding in real annotation tools)


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


def _check_box(bbox, img: dict, json_file: str, ann_id) -> None:
    where = f"{json_file}: annotation {ann_id} (image {img['id']})"
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        raise DatasetError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: box {list(bbox)} has non-positive size")
    W, H = img["width"], img["height"]
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > W + BOX_TOLERANCE or y + h > H + BOX_TOLERANCE:
        raise DatasetError(f"{where}: box {list(bbox)} lies outside the {W}x{H} image")


def _segmentation(segm, where: str):
    """Polygons detectron2 accepts (≥ 3 points) or a compressed RLE dict; None when no polygon is valid."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise DatasetError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        if isinstance(segm["counts"], list):  # uncompressed RLE (COCO crowd regions), as detectron2 converts it
            from pycocotools import mask as mask_util

            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm
    if not isinstance(segm, list):
        raise DatasetError(f"{where}: segmentation must be a polygon list or an RLE dict")
    polygons = [p for p in segm if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]
    return polygons or None


def load_coco(json_file: str, image_root: str, check_files: bool = True) -> Tuple[List[dict], dict]:
    """Records and metadata of a COCO instances json whose `file_name`s are relative to `image_root`."""
    data = _read(json_file)
    classes, id_map = _categories(data, json_file)
    if not data["images"]:
        raise DatasetError(f"{json_file}: empty dataset (no images)")
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
    images = {img["id"]: img for img in data["images"]}
    dropped = 0
    for ann in data.get("annotations", []):
        ann_id = ann.get("id", "?")
        if ann.get("image_id") not in records:
            raise DatasetError(f"{json_file}: annotation {ann_id} refers to unknown image id {ann.get('image_id')!r}")
        if ann.get("category_id") not in id_map:
            raise DatasetError(f"{json_file}: annotation {ann_id} has unknown category id {ann.get('category_id')!r}")
        img = images[ann["image_id"]]
        _check_box(ann.get("bbox"), img, json_file, ann_id)
        out = {"bbox": [float(v) for v in ann["bbox"]], "bbox_mode": 1, "category_id": id_map[ann["category_id"]],
               "iscrowd": int(ann.get("iscrowd", 0))}
        if "segmentation" in ann:
            segm = _segmentation(ann["segmentation"], f"{json_file}: annotation {ann_id}")
            if segm is None:
                # detectron2's load_coco_json drops such instances too: a mask model cannot use them.
                dropped += 1
                continue
            out["segmentation"] = segm
        records[ann["image_id"]]["annotations"].append(out)
    if dropped:
        logging.getLogger("objcrop").warning("%s: dropped %d annotations without a valid polygon", json_file, dropped)
    metadata = {"thing_classes": classes, "thing_dataset_id_to_contiguous_id": id_map,
                "evaluator_type": "coco", "json_file": os.path.abspath(json_file),
                "image_root": os.path.abspath(image_root)}
    return list(records.values()), metadata
