"""A plain image folder → record dicts without boxes.

Every image below DIR (recursively, sorted) is a record. An image that cannot
be read is skipped and counted in one log line (objcrop/datasets/quirks.py);
`strict=True` makes it an error.
When all images sit in first-level subfolders (the ImageFolder layout, at
least two of them) the subfolder names become classes and each record gets
`labels: [class]`, which a linear probe can use.
"""
import os
from typing import List, Tuple

from objcrop.datasets.images import IMAGE_EXTENSIONS, verify_image
from objcrop.datasets.quirks import Quirks
from objcrop.errors import DatasetError


def list_images(dirname: str) -> List[str]:
    paths = []
    for root, dirs, files in os.walk(dirname):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return paths


def _jpeg_complete(path: str) -> bool:
    """A JPEG ends with its EOI marker (FF D9); a download cut short does not. Some writers append data, so look
    at the last few KB rather than the last two bytes."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        return b"\xff\xd9" in f.read()


def check_image(path: str) -> Tuple[int, int]:
    """(height, width) of a readable image; DatasetError naming the file otherwise."""
    height, width = verify_image(path)
    if path.lower().endswith((".jpg", ".jpeg")) and not _jpeg_complete(path):
        raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker)")
    return height, width


def _class_of(rel: str):
    parts = rel.split(os.sep)
    return parts[0] if len(parts) == 2 else None


def load_folder(dirname: str, strict: bool = False, progress: bool = True) -> Tuple[List[dict], dict]:
    from tqdm import tqdm

    if not os.path.isdir(dirname):
        raise DatasetError(f"{dirname}: image folder not found")
    paths = list_images(dirname)
    if not paths:
        raise DatasetError(f"{dirname}: empty dataset (no image files: {', '.join(IMAGE_EXTENSIONS)})")
    rels = [os.path.relpath(p, dirname) for p in paths]
    subdirs = [_class_of(r) for r in rels]
    classes = sorted(set(subdirs)) if None not in subdirs and len(set(subdirs)) >= 2 else []
    index = {c: k for k, c in enumerate(classes)}
    records, skipped = [], []
    quirks = Quirks(dirname, strict)
    for path, rel, sub in tqdm(list(zip(paths, rels, subdirs)), desc=f"checking {os.path.basename(dirname)}",
                               unit="img", disable=not progress or len(paths) < 2000):
        try:
            height, width = check_image(path)
        except DatasetError as e:
            if strict:
                raise
            skipped.append(str(e))
            quirks.note("unreadable_image", str(e))
            continue
        record = {"file_name": os.path.abspath(path), "image_id": rel, "height": height, "width": width,
                  "annotations": []}
        if classes:
            record["labels"] = [index[sub]]
        records.append(record)
    quirks.log()  # one line: "N unreadable image(s) skipped (e.g. FILE: why)"
    if not records:
        raise DatasetError(f"{dirname}: empty dataset (all {len(paths)} images unreadable)")
    metadata = {"thing_classes": classes, "evaluator_type": None, "dirname": os.path.abspath(dirname),
                "num_skipped": len(skipped), "skipped": skipped, "quirks": quirks.summary()}
    return records, metadata
