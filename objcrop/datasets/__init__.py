"""Datasets in one place: readers that return detectron2-style record dicts without importing detectron2.

    records, metadata = load_dataset("synth:/data/objcrop_synth:train")

See docs/INTERFACES.md ("Datasets") for the record format and
objcrop/datasets/catalog.py for the names and specs.
"""
from typing import List

import numpy as np

from objcrop.datasets.catalog import DETECTRON2_DATASETS, dataset_root, load_dataset, register_dataset
from objcrop.datasets.images import read_image
from objcrop.errors import DatasetError

__all__ = ["load_dataset", "multilabel_targets", "read_image", "register_dataset", "dataset_root",
           "DETECTRON2_DATASETS"]


def multilabel_targets(records: List[dict], num_classes: int) -> np.ndarray:
    """[N, K] float32 0/1 targets: a record's `labels` when present, else its annotations' categories."""
    targets = np.zeros((len(records), num_classes), np.float32)
    for i, r in enumerate(records):
        classes = r["labels"] if "labels" in r else [a["category_id"] for a in r.get("annotations", [])]
        for c in classes:
            if not 0 <= c < num_classes:
                raise DatasetError(f"{r.get('file_name', r.get('image_id'))}: class {c} outside 0..{num_classes - 1}")
            targets[i, c] = 1.0
    return targets
