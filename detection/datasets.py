"""Registration of objcrop dataset names with detectron2's DatasetCatalog and MetadataCatalog.

    from objcrop.detection.datasets import register
    cfg.DATASETS.TRAIN = (register("synth:/data/synth:train"),)

Any name `objcrop.datasets.load_dataset` understands works, specs with paths
included (detectron2 accepts any string as a dataset name). The records are
loaded lazily, when detectron2 first asks for them; the metadata that
evaluators and model setup need (thing_classes, evaluator_type, json_file or
dirname/split/year) is set at registration.

A name detectron2 already knows is left as it is: importing detectron2.data
registers its own built-ins (coco_2017_val, voc_2007_trainval, ...) under the
same $DETECTRON2_DATASETS root, with the same files and evaluators (its loaders
have no strict mode). `strict` (OBJCROP.STRICT_DATA, `detect train --strict`)
refuses real datasets' quirks instead of repairing them (objcrop/datasets/quirks.py).
"""
from objcrop.datasets import load_dataset
from objcrop.datasets.catalog import dataset_metadata

# Metadata keys MetadataCatalog should hold ("name" is detectron2's own and cannot be set).
_METADATA_KEYS = ("thing_classes", "evaluator_type", "json_file", "image_root", "thing_dataset_id_to_contiguous_id",
                  "dirname", "split", "year", "label_names")


# name -> the strict mode objcrop registered it with (names detectron2 registered itself are absent)
_STRICT_OF_NAME = {}


def register(name: str, strict: bool = False) -> str:
    """Register `name` with detectron2 and return it. Later calls are no-ops, except that objcrop's
    own registration is redone when `strict` differs (one process may train twice)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        if _STRICT_OF_NAME.get(name, strict) == strict:
            return name
        DatasetCatalog.remove(name)
    metadata = {k: v for k, v in dataset_metadata(name).items() if k in _METADATA_KEYS and v is not None}
    DatasetCatalog.register(name, lambda: load_dataset(name, strict=strict)[0])
    _STRICT_OF_NAME[name] = strict
    MetadataCatalog.get(name).set(**metadata)
    return name
