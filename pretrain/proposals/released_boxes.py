"""The released precomputed boxes of object-cropping-ssl, read for `--method file` (a `.npy` file).

The released code keeps its boxes in pickled dicts saved with `np.save` and read with
`np.load(path, allow_pickle=True).item()`. Two layouts occur:

* **COCO BING crops** (`datasets/coco_sup_loader_bing.py`, `crop_image_dict_coco.npy`): one key per
  box, `"<folder>/<image stem>_<k>.<ext>"` (e.g. `coco_crops_new/000000391895_3.jpg`), k = 0..9 the
  box's BING rank; the value's first four entries are `x1, y1, x2, y2` in the image's pixels
  (`extracy_bbox` reads them with `int(float(v))`).
* **OpenImages objects** (`datasets/openimages_dataset_bing.py`, `images_selected_with_all_features.npy`,
  described in the README): `{image id: {"data": [row, ...]}}`, each row with `row[4], row[5], row[6],
  row[7]` = x1, x2, y1, y2 as fractions of the width / height (`extract_bb`: `int(float(row[4]) * W)`).
  The rows follow OpenImages' box-annotation CSV (ImageID, Source, LabelName, Confidence, XMin, XMax,
  YMin, YMax, ...).

Both become `{image_id: [[x, y, w, h, score], ...]}` in pixels, ranked as released (score 1 - rank / n:
the k of a COCO key, the row order of an OpenImages entry). Images are matched to the dataset as
`--method file` matches them: by image id, file name, base name, or base name without extension.

A pickle can run code when it is loaded: these files are read with an unpickler that builds only
numpy arrays and plain Python values, and refuses anything else (naming the file and the class).
"""
import pickle
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from objcrop.errors import ObjcropError

COCO_KEY = re.compile(r"^(?:.*/)?(?P<stem>.+)_(?P<rank>\d+)\.[^./]+$")
OPENIMAGES_COLUMNS = (4, 5, 6, 7)  # x1, x2, y1, y2 (normalised): extract_bb's self.bbox[item][4..7]

_SAFE_CLASSES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, f, path: str):
        super().__init__(f, encoding="latin1")  # files pickled by Python 2 numpy, as np.load reads them
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_CLASSES or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise ObjcropError(f"{self.path}: holds a pickled {module}.{name}; only numpy arrays and plain values are "
                           f"read from a released box file")


def read_npy_dict(path: str) -> dict:
    """The dict of a `np.save`d dict, without running arbitrary pickled code."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if not dtype.hasobject:
                raise ObjcropError(f"{path}: a plain {dtype} array, not a saved dict of boxes")
            value = _PlainUnpickler(f, path).load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ObjcropError(f"{path}: not a readable .npy file ({e})") from e
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if not isinstance(value, dict):
        raise ObjcropError(f"{path}: expected a saved dict (np.save of a dict), got {type(value).__name__}")
    return value


def released_boxes(path: str, match: Callable[[str], Optional[Any]], sizes: Dict[Any, Tuple[int, int]]) \
        -> Tuple[Dict[Any, List[list]], int]:
    """({image_id: [[x, y, w, h, score], ...]}, entries naming no dataset image) from a released `.npy` file.

    `match(key)` is the dataset image id a key names (or None); `sizes[image_id]` its (width, height)."""
    data = read_npy_dict(path)
    if not data:
        raise ObjcropError(f"{path}: an empty dict")
    first = next(iter(data.values()))
    if isinstance(first, dict):
        ranked, unmatched = _openimages(path, data, match, sizes)
    else:
        ranked, unmatched = _coco_crops(path, data, match)
    return {image_id: _scored(rows) for image_id, rows in ranked.items()}, unmatched


def _coco_crops(path: str, data: dict, match) -> Tuple[Dict[Any, list], int]:
    by_image: Dict[Any, Dict[int, list]] = {}
    unmatched = 0
    for key, value in data.items():
        m = COCO_KEY.match(str(key))
        if not m:
            raise ObjcropError(f"{path}: key {key!r} is neither '<folder>/<image>_<rank>.<ext>' (COCO BING crops) "
                               f"nor an image id with {{'data': rows}} (OpenImages)")
        image_id = match(m.group("stem"))
        if image_id is None:
            unmatched += 1
            continue
        x1, y1, x2, y2 = _floats(path, key, value, (0, 1, 2, 3))
        by_image.setdefault(image_id, {})[int(m.group("rank"))] = [x1, y1, x2, y2]
    return {i: [boxes[k] for k in sorted(boxes)] for i, boxes in by_image.items()}, unmatched


def _openimages(path: str, data: dict, match, sizes) -> Tuple[Dict[Any, list], int]:
    out: Dict[Any, list] = {}
    unmatched = 0
    for key, entry in data.items():
        if not isinstance(entry, dict) or "data" not in entry:
            raise ObjcropError(f"{path}: entry {key!r} has no 'data' rows (OpenImages layout: "
                               f"{{image id: {{'data': [row, ...]}}}})")
        image_id = match(str(key))
        if image_id is None:
            unmatched += 1
            continue
        width, height = sizes[image_id]
        rows = []
        for row in entry["data"]:
            x1, x2, y1, y2 = _floats(path, key, row, OPENIMAGES_COLUMNS)
            rows.append([x1 * width, y1 * height, x2 * width, y2 * height])
        out[image_id] = rows
    return out, unmatched


def _floats(path: str, key, row, columns) -> List[float]:
    try:
        return [float(row[c]) for c in columns]
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise ObjcropError(f"{path}: entry {key!r} has no numbers at positions {list(columns)} ({e})") from e


def _scored(xyxy_rows: List[list]) -> List[list]:
    """[x, y, w, h, score] rows, score 1 - rank / n: the released order is the ranking."""
    n = max(len(xyxy_rows), 1)
    return [[x1, y1, x2 - x1, y2 - y1, 1.0 - k / n] for k, (x1, y1, x2, y2) in enumerate(xyxy_rows)]

