"""OpenImages (the paper's main benchmark) in its official csv layout → record dicts.

    DIR/
      oidv7-class-descriptions.csv          LabelName,DisplayName    (or class-descriptions-boxable.csv,
                                                                       oidv6-class-descriptions.csv, class-descriptions.csv;
                                                                       the older files have no header row)
      classes.txt                           optional: the LabelNames to keep, one a line, in class order
                                            (e.g. the paper's 208 classes); default: every described class
      SPLIT-annotations-human-imagelabels-boxable.csv   ImageID,Source,LabelName,Confidence
          (or oidv7-SPLIT-annotations-human-imagelabels.csv, SPLIT-annotations-human-imagelabels.csv)
      SPLIT-annotations-bbox.csv            ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,...
          (or oidv6-SPLIT-annotations-bbox.csv); optional
      SPLIT/<ImageID>.jpg

SPLIT is OpenImages' own name: train, validation or test. Without an image-id
list the dataset is every image that has a human-verified label or a box; with
one (`openimages:DIR:SPLIT:LIST`) exactly the listed images, in the list's order.
`labels` are the human-verified positives (Confidence 1) plus every boxed class.

Image-id lists: a text file (one ImageID a line, or a csv whose first column is
ImageID) or a `.npy` dictionary of the paper's released code
(github.com/shlokk/object-cropping-ssl, README "Preparation": five dicts in its
Google Drive folder, read there with `np.load(..., allow_pickle=True).item()`):
  images_selected_new.npy                 {ImageID: [LabelName, ...]}: the 212,753-image
                                          OpenImages subset (OHMS, 208 classes) for pretraining
                                          and the probe's training set (train split)
  images_selected_with_all_features.npy   {ImageID: {"data": [bbox csv row, ...]}}: the same
                                          images with their boxes (row[4:8] = XMin, XMax, YMin, YMax)
  images_selected_test_40k.npy            {ImageID: [LabelName, ...]}: the probe's test images
The ImageIDs are the dictionary's keys, in file order; labels and boxes still come
from the official csv files, so give the split the images live in
(`openimages:DIR:train:images_selected_new.npy`). objcrop never runs np.load with
allow_pickle: the pickled dictionary is read with objcrop.io's restricted unpickler
(dicts, lists, str, numbers, numpy arrays), and a file naming anything else is
refused with the global it names. To convert one for other tools:
`python -c "import numpy as np; print(*np.load('F.npy', allow_pickle=True).item(), sep='\\n')" > ids.txt`
(only for a file you trust).

Boxes are converted from normalised to absolute pixels. IsGroupOf boxes become
iscrowd=1 (objcrop/datasets/boxes.py: group-of regions are not objects); IsDepiction
and IsTruncated boxes stay objects (a drawn or cut-off car is still a car to crop),
and every flag column present (IsOccluded, IsTruncated, IsGroupOf, IsDepiction,
IsInside) is kept in the annotation's `flags` dict. Boxes past the border are
clipped and degenerate boxes dropped, counted in one log line, or refused with
strict (objcrop/datasets/quirks.py).
"""
import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

from objcrop.datasets.images import image_size
from objcrop.datasets.quirks import Quirks
from objcrop.errors import DatasetError
from objcrop.io import load_pickle_restricted

DESCRIPTION_FILES = ("oidv7-class-descriptions.csv", "class-descriptions-boxable.csv",
                     "oidv6-class-descriptions.csv", "class-descriptions.csv")
LABEL_FILES = ("{split}-annotations-human-imagelabels-boxable.csv", "oidv7-{split}-annotations-human-imagelabels.csv",
               "{split}-annotations-human-imagelabels.csv", "oidv6-{split}-annotations-human-imagelabels.csv")
BOX_FILES = ("{split}-annotations-bbox.csv", "oidv6-{split}-annotations-bbox.csv")
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
FLAG_COLUMNS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")


def _first(dirname: str, names: Sequence[str], split: str) -> Optional[str]:
    for n in names:
        path = os.path.join(dirname, n.format(split=split))
        if os.path.isfile(path):
            return path
    return None


def find_files(dirname: str, split: str, required: bool = True) -> Optional[Dict[str, Optional[str]]]:
    """Paths of the description, image-label and box csv files of a split (None where absent)."""
    files = {"descriptions": _first(dirname, DESCRIPTION_FILES, split),
             "labels": _first(dirname, LABEL_FILES, split), "boxes": _first(dirname, BOX_FILES, split)}
    problem = None
    if files["descriptions"] is None:
        problem = f"{dirname}: no class descriptions csv (one of {', '.join(DESCRIPTION_FILES)})"
    elif files["labels"] is None and files["boxes"] is None:
        problem = (f"{dirname}: no image-level label or box csv for split {split!r} "
                   f"(e.g. {LABEL_FILES[0].format(split=split)}, {BOX_FILES[0].format(split=split)})")
    if problem:
        if required:
            raise DatasetError(problem)
        return None
    return files


def read_descriptions(path: str) -> Dict[str, str]:
    """LabelName → DisplayName, in file order."""
    names: Dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row_no, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) < 2:
                raise DatasetError(f"{path}: row {row_no}: expected LabelName,DisplayName")
            if row_no == 1 and row[0] == "LabelName":
                continue  # the v7 file has a header row, older ones do not
            names[row[0]] = row[1]
    if not names:
        raise DatasetError(f"{path}: no classes")
    return names


def _rows(path: str, columns: Sequence[str]):
    """(row number, {column: value}) for the needed columns of an official csv, header checked."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: empty csv")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
        index = {c: header.index(c) for c in header}
        for row_no, row in enumerate(reader, 2):
            if row:
                yield row_no, {c: row[i] for c, i in index.items() if i < len(row)}


def read_image_ids(path: str) -> List[str]:
    """The ImageIDs of a list file: text (one a line, or a csv whose first column is ImageID) or the
    released code's `.npy` dictionaries (their keys, in file order; see the module docstring)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image id list not found")
    if path.endswith(".npy"):
        ids = read_npy_image_ids(path)
    else:
        ids = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                first = line.strip().split(",")[0].strip()
                if first and first != "ImageID":
                    ids.append(first)
    if not ids:
        raise DatasetError(f"{path}: empty image id list")
    return ids


def read_npy_image_ids(path: str) -> List[str]:
    """Keys of an object-cropping-ssl `.npy` dictionary ({ImageID: ...}), or the items of a 1-d string array.

    `np.load(allow_pickle=True)` would run any code the file names; the object payload is read
    with objcrop.io's restricted unpickler instead (dicts, lists, str, numbers, numpy arrays only).
    """
    import numpy as np

    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran, dtype = (readers[version](f) if version in readers
                                     else np.lib.format._read_array_header(f, version))  # 3.0: utf-8 header
        except ValueError as e:
            raise DatasetError(f"{path}: not a .npy file ({e})") from e
        if dtype.hasobject:
            array = load_pickle_restricted(f, path, DatasetError, "image id list")
        else:
            array = np.fromfile(f, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    value = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "UO":
        return [str(v) for v in value.tolist()]
    raise DatasetError(f"{path}: expected a dictionary keyed by ImageID (object-cropping-ssl's "
                       f"images_selected_*.npy) or a 1-d array of ImageIDs, got {type(value).__name__}"
                       f"{getattr(value, 'shape', '')}")


def _classes(dirname: str, descriptions: Dict[str, str], desc_file: str) -> List[str]:
    path = os.path.join(dirname, "classes.txt")
    if not os.path.isfile(path):
        return list(descriptions)
    with open(path, encoding="utf-8") as f:
        wanted = [line.strip().split(",")[0] for line in f if line.strip()]
    unknown = [w for w in wanted if w not in descriptions]
    if unknown:
        raise DatasetError(f"{path}: LabelName(s) not in {os.path.basename(desc_file)}: {', '.join(unknown[:5])}")
    return wanted


def _float(row: dict, key: str, where: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        raise DatasetError(f"{where}: {key} is not a number: {row.get(key)!r}") from None


class _Labels:
    """Class lookup shared by the label and box csv: an unknown LabelName is a structural fault."""

    def __init__(self, descriptions: Dict[str, str], label_names: List[str], desc_file: str):
        self.descriptions, self.desc_file = descriptions, desc_file
        self.index = {name: k for k, name in enumerate(label_names)}

    def __call__(self, name: str, where: str) -> Optional[int]:
        if name not in self.descriptions:
            raise DatasetError(f"{where}: unknown LabelName {name!r} (not in {os.path.basename(self.desc_file)})")
        return self.index.get(name)  # None: a described class that classes.txt leaves out


def _read_labels(path: str, selected: Optional[set], classes: _Labels) -> Dict[str, set]:
    """ImageID -> human-verified positive classes (Confidence >= 0.5) of the image-level label csv."""
    labels: Dict[str, set] = {}
    for row_no, row in _rows(path, LABEL_COLUMNS):
        image_id = row["ImageID"]
        if selected is not None and image_id not in selected:
            continue
        where = f"{path}: row {row_no} (image {image_id})"
        cls = classes(row["LabelName"], where)
        positives = labels.setdefault(image_id, set())
        if cls is not None and _float(row, "Confidence", where) >= 0.5:
            positives.add(cls)
    return labels


def _read_boxes(path: str, selected: Optional[set], classes: _Labels, labels: Dict[str, set]) -> Dict[str, list]:
    """ImageID -> [(normalised XYXY, class, {flag: value}, csv row)]; boxed classes join the image's labels."""
    boxes: Dict[str, list] = {}
    shared_flags: Dict[tuple, dict] = {}  # one dict per combination: the full train csv has 14.6M boxes
    for row_no, row in _rows(path, BOX_COLUMNS):
        image_id = row["ImageID"]
        if selected is not None and image_id not in selected:
            continue
        where = f"{path}: row {row_no} (image {image_id})"
        cls = classes(row["LabelName"], where)
        xyxy = (_float(row, "XMin", where), _float(row, "YMin", where), _float(row, "XMax", where),
                _float(row, "YMax", where))
        labels.setdefault(image_id, set())
        if cls is not None:
            labels[image_id].add(cls)
            key = tuple((k, int(_float(row, k, where))) for k in FLAG_COLUMNS if row.get(k, "") not in ("", None))
            flags = shared_flags.setdefault(key, dict(key))
            boxes.setdefault(image_id, []).append((xyxy, cls, flags, row_no))
    return boxes


def _annotations(image_boxes: list, height: int, width: int, box_file: str, image_id: str,
                 quirks: Quirks) -> List[dict]:
    """Record annotations of one image: pixels, clipped / dropped by `quirks`, flags kept, IsGroupOf -> iscrowd."""
    out = []
    for (x0, y0, x1, y1), cls, flags, row_no in image_boxes:
        xyxy = quirks.box(x0 * width, y0 * height, x1 * width, y1 * height, width, height,
                          f"{box_file}: row {row_no} (image {image_id})")
        if xyxy is None:
            continue
        out.append({"bbox": [xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]], "bbox_mode": 1,
                    "category_id": cls, "iscrowd": int(flags.get("IsGroupOf", 0) == 1), "flags": flags})
    return out


def load_openimages(dirname: str, split: str, image_ids_file: Optional[str] = None,
                    progress: bool = True, strict: bool = False) -> Tuple[List[dict], dict]:
    """Records and metadata of an OpenImages split (the module docstring has the layout and the rules)."""
    from tqdm import tqdm

    if not os.path.isdir(dirname):
        raise DatasetError(f"{dirname}: OpenImages directory not found")
    files = find_files(dirname, split)
    descriptions = read_descriptions(files["descriptions"])
    label_names = _classes(dirname, descriptions, files["descriptions"])
    classes = _Labels(descriptions, label_names, files["descriptions"])
    listed = read_image_ids(image_ids_file) if image_ids_file else None
    selected = set(listed) if listed is not None else None
    labels = _read_labels(files["labels"], selected, classes) if files["labels"] else {}
    boxes = _read_boxes(files["boxes"], selected, classes, labels) if files["boxes"] else {}
    ids = listed if listed is not None else sorted(labels)
    if not ids:
        raise DatasetError(f"{dirname}: empty dataset (no images with labels in split {split!r})")
    quirks = Quirks(f"{dirname} ({split})", strict)
    records = []
    for image_id in tqdm(ids, desc=f"openimages {split}", unit="img", disable=not progress or len(ids) < 2000):
        path = os.path.join(dirname, split, image_id + ".jpg")
        height, width = image_size(path)
        annotations = _annotations(boxes.get(image_id, []), height, width, files["boxes"], image_id, quirks)
        if not annotations:
            quirks.note("empty_image", path)
        records.append({"file_name": os.path.abspath(path), "image_id": image_id, "height": height, "width": width,
                        "annotations": annotations, "labels": sorted(labels.get(image_id, ()))})
    quirks.log()
    metadata = {"thing_classes": [descriptions[n] for n in label_names], "label_names": label_names,
                "evaluator_type": None, "dirname": os.path.abspath(dirname), "split": split,
                "quirks": quirks.summary()}
    return records, metadata
