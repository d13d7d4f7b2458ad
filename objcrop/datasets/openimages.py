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
one (`openimages:DIR:SPLIT:LIST`, one ImageID a line, a csv whose first column
is ImageID works too) exactly the listed images, as for the paper's 212,753-image
subset. `labels` are the human-verified positives (Confidence 1) plus every
boxed class; boxes are converted from normalised to absolute pixels
(IsGroupOf boxes become iscrowd=1).
"""
import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

from objcrop.datasets.images import image_size
from objcrop.errors import DatasetError

DESCRIPTION_FILES = ("oidv7-class-descriptions.csv", "class-descriptions-boxable.csv",
                     "oidv6-class-descriptions.csv", "class-descriptions.csv")
LABEL_FILES = ("{split}-annotations-human-imagelabels-boxable.csv", "oidv7-{split}-annotations-human-imagelabels.csv",
               "{split}-annotations-human-imagelabels.csv", "oidv6-{split}-annotations-human-imagelabels.csv")
BOX_FILES = ("{split}-annotations-bbox.csv", "oidv6-{split}-annotations-bbox.csv")
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


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
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image id list not found")
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            first = line.strip().split(",")[0].strip()
            if first and first != "ImageID":
                ids.append(first)
    if not ids:
        raise DatasetError(f"{path}: empty image id list")
    return ids


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


def load_openimages(dirname: str, split: str, image_ids_file: Optional[str] = None,
                    progress: bool = True) -> Tuple[List[dict], dict]:
    from tqdm import tqdm

    if not os.path.isdir(dirname):
        raise DatasetError(f"{dirname}: OpenImages directory not found")
    files = find_files(dirname, split)
    descriptions = read_descriptions(files["descriptions"])
    label_names = _classes(dirname, descriptions, files["descriptions"])
    index = {name: k for k, name in enumerate(label_names)}
    selected = set(read_image_ids(image_ids_file)) if image_ids_file else None
    labels: Dict[str, set] = {}
    boxes: Dict[str, List[Tuple[list, int, int]]] = {}

    def check_label(name: str, where: str) -> Optional[int]:
        if name not in descriptions:
            raise DatasetError(f"{where}: unknown LabelName {name!r} (not in {os.path.basename(files['descriptions'])})")
        return index.get(name)  # None: a described class that classes.txt leaves out

    if files["labels"]:
        for row_no, row in _rows(files["labels"], LABEL_COLUMNS):
            image_id = row["ImageID"]
            if selected is not None and image_id not in selected:
                continue
            where = f"{files['labels']}: row {row_no} (image {image_id})"
            cls = check_label(row["LabelName"], where)
            positives = labels.setdefault(image_id, set())
            if cls is not None and _float(row, "Confidence", where) >= 0.5:
                positives.add(cls)
    if files["boxes"]:
        for row_no, row in _rows(files["boxes"], BOX_COLUMNS):
            image_id = row["ImageID"]
            if selected is not None and image_id not in selected:
                continue
            where = f"{files['boxes']}: row {row_no} (image {image_id})"
            cls = check_label(row["LabelName"], where)
            x0, x1 = _float(row, "XMin", where), _float(row, "XMax", where)
            y0, y1 = _float(row, "YMin", where), _float(row, "YMax", where)
            if not (x1 > x0 and y1 > y0):
                raise DatasetError(f"{where}: box has non-positive size (XMin {x0}, XMax {x1}, YMin {y0}, YMax {y1})")
            if min(x0, y0) < -0.01 or max(x1, y1) > 1.01:
                raise DatasetError(f"{where}: box outside the image (coordinates must be normalised to 0..1)")
            labels.setdefault(image_id, set())
            if cls is not None:
                labels[image_id].add(cls)
                group = int(row.get("IsGroupOf", "0") or 0)
                boxes.setdefault(image_id, []).append(([x0, y0, x1, y1], cls, group))
    ids = [i for i in read_image_ids(image_ids_file)] if image_ids_file else sorted(labels)
    if not ids:
        raise DatasetError(f"{dirname}: empty dataset (no images with labels in split {split!r})")
    records = []
    for image_id in tqdm(ids, desc=f"openimages {split}", unit="img", disable=not progress or len(ids) < 2000):
        path = os.path.join(dirname, split, image_id + ".jpg")
        height, width = image_size(path)
        annotations = [{"bbox": [b[0] * width, b[1] * height, (b[2] - b[0]) * width, (b[3] - b[1]) * height],
                        "bbox_mode": 1, "category_id": cls, "iscrowd": group}
                       for b, cls, group in boxes.get(image_id, [])]
        records.append({"file_name": os.path.abspath(path), "image_id": image_id, "height": height, "width": width,
                        "annotations": annotations, "labels": sorted(labels.get(image_id, ()))})
    metadata = {"thing_classes": [descriptions[n] for n in label_names], "label_names": label_names,
                "evaluator_type": None, "dirname": os.path.abspath(dirname), "split": split}
    return records, metadata
