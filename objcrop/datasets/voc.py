"""PASCAL VOC layout (VOC2007, VOC2012, the embedded set's copy) → record dicts.

Our own XML reader rather than detectron2's `load_voc_instances`: that one
needs detectron2 and fails on an ImageSets file with a single line (its
`np.loadtxt` returns a 0-d array). Boxes follow detectron2's convention: VOC's
1-based inclusive xmin/ymin become 0-based corners, xmax/ymax stay.
Boxes past the border are clipped and degenerate boxes dropped (or refused
with strict): objcrop/datasets/quirks.py. `difficult` objects are kept, with
the flag, as detectron2 keeps them; its VOC evaluator reads the XML itself.
"""
import os
import re
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence, Tuple

from objcrop.datasets.quirks import Quirks
from objcrop.errors import DatasetError
from objcrop.io import read_json

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_classes(dirname: str) -> Tuple[List[str], int]:
    """Class names and year of a VOC-layout dir.

    `classes.txt` in the dir (one name per line) or the embedded set's
    `meta.json` one level up override the 20 PASCAL classes. The year comes
    from a `VOC20xx` dir name; other dirs count as 2012 (area-based AP, not the
    11-point VOC2007 metric).
    """
    match = re.search(r"VOC(20\d\d)", os.path.basename(os.path.normpath(dirname)))
    year = int(match.group(1)) if match else 2012
    classes_txt = os.path.join(dirname, "classes.txt")
    synth_meta = os.path.join(os.path.dirname(os.path.normpath(dirname)), "meta.json")
    if os.path.isfile(classes_txt):
        with open(classes_txt, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()], year
    if os.path.isfile(synth_meta):
        meta = read_json(synth_meta)
        if isinstance(meta, dict) and meta.get("generator") == "objcrop.datasets.synth":
            return list(meta["classes"]), year
    return list(VOC_CLASSES), year


def read_image_set(dirname: str, split: str) -> List[str]:
    path = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image set file not found (VOC dir {dirname}, split {split!r})")
    with open(path, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: empty dataset (no image ids)")
    return ids


def _text(node: ET.Element, tag: str, xml_file: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetError(f"{xml_file}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_file: str) -> float:
    text = _text(node, tag, xml_file)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{xml_file}: <{tag}> is not a number: {text!r}") from None


def _object(obj: ET.Element, k: int, index: dict, size: Tuple[int, int], xml_file: str,
            quirks: Quirks) -> Optional[dict]:
    """One <object> as a record annotation; None when its box is dropped (degenerate)."""
    name = _text(obj, "name", xml_file)
    if name not in index:
        raise DatasetError(f"{xml_file}: object {k} has unknown class {name!r}")
    box = obj.find("bndbox")
    if box is None:
        raise DatasetError(f"{xml_file}: object {k} ({name}) has no <bndbox>")
    x0, y0 = _number(box, "xmin", xml_file) - 1.0, _number(box, "ymin", xml_file) - 1.0
    x1, y1 = _number(box, "xmax", xml_file), _number(box, "ymax", xml_file)
    height, width = size
    xyxy = quirks.box(x0, y0, x1, y1, width, height, f"{xml_file}: object {k} ({name})")
    if xyxy is None:
        return None
    x0, y0, x1, y1 = xyxy
    difficult = obj.find("difficult")
    # Difficult objects stay in the training records, as detectron2's load_voc_instances keeps them; the flag is
    # kept too. The VOC evaluator (PascalVOCDetectionEvaluator) reads the XML itself and ignores them in AP.
    return {"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": 1, "category_id": index[name], "iscrowd": 0,
            "difficult": int(difficult.text.strip() == "1") if difficult is not None and difficult.text else 0}


def parse_annotation(xml_file: str, classes: Sequence[str],
                     quirks: Optional[Quirks] = None) -> Tuple[int, int, List[dict]]:
    """(height, width, annotations) of one VOC XML file, validated; quirks repaired or refused by `quirks`."""
    quirks = quirks if quirks is not None else Quirks(xml_file)
    if not os.path.isfile(xml_file):
        raise DatasetError(f"{xml_file}: annotation file not found")
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml_file}: not valid XML ({e})") from e
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{xml_file}: missing <size>")
    height, width = int(_number(size, "height", xml_file)), int(_number(size, "width", xml_file))
    index = {name: k for k, name in enumerate(classes)}
    annotations = [_object(obj, k, index, (height, width), xml_file, quirks)
                   for k, obj in enumerate(root.findall("object"))]
    return height, width, [a for a in annotations if a is not None]


def load_voc(dirname: str, split: str, classes: Optional[Sequence[str]] = None,
             check_files: bool = True, strict: bool = False) -> Tuple[List[dict], dict]:
    """Records and metadata (what detectron2's PascalVOCDetectionEvaluator needs) of a VOC-layout split.

    Boxes past the border are clipped and degenerate ones dropped, counted in one log line, or
    refused with `strict` (objcrop/datasets/quirks.py).
    """
    if not os.path.isdir(dirname):
        raise DatasetError(f"{dirname}: VOC directory not found")
    found_classes, year = voc_classes(dirname)
    classes = list(classes) if classes is not None else found_classes
    quirks = Quirks(f"{dirname} ({split})", strict)
    records = []
    for image_id in read_image_set(dirname, split):
        jpg = os.path.join(dirname, "JPEGImages", image_id + ".jpg")
        if check_files and not os.path.isfile(jpg):
            raise DatasetError(f"{jpg}: image file not found (listed in ImageSets/Main/{split}.txt)")
        xml_file = os.path.join(dirname, "Annotations", image_id + ".xml")
        height, width, annotations = parse_annotation(xml_file, classes, quirks)
        if not annotations:
            quirks.note("empty_image", xml_file)
        records.append({"file_name": jpg, "image_id": image_id, "height": height, "width": width,
                        "annotations": annotations})
    quirks.log()
    metadata = {"thing_classes": classes, "evaluator_type": "pascal_voc", "dirname": os.path.abspath(dirname),
                "split": split, "year": year, "quirks": quirks.summary()}
    return records, metadata
