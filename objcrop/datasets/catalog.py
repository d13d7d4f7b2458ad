"""Dataset names: built-ins under $DETECTRON2_DATASETS and specs that carry their paths.

    coco_2017_{train,val}                 DATASETS/coco/{train2017,val2017}, annotations/instances_*.json
    voc_{2007,2012}_{trainval,train,val,test}   DATASETS/VOC2007, DATASETS/VOC2012
    objcrop_synth_{train,val,test}        DATASETS/objcrop_synth (written by `objcrop data synth`)
    openimages_{train,validation,test}    DATASETS/openimages (see objcrop/datasets/openimages.py)

    coco:JSON:IMAGE_DIR    any COCO instances json + image folder
    voc:VOC_DIR:SPLIT      any VOC-layout dir (VOC2007/, the synth set's DIR/voc, ...)
    openimages:DIR:SPLIT[:IMAGE_ID_LIST]   IMAGE_ID_LIST: text/csv, or object-cropping-ssl's .npy dicts
    folder:DIR             a plain image folder (no labels; class subfolders give image labels)
    synth:DIR:SPLIT        the embedded dataset in DIR (COCO-evaluated, boxes + masks)

DATASETS is $DETECTRON2_DATASETS, default ./datasets, read at call time.
"""
import os
from typing import Callable, Dict, List, Tuple, Union

from objcrop.errors import DatasetError

DETECTRON2_DATASETS = "DETECTRON2_DATASETS"  # the environment variable detectron2 uses for its dataset root

Loader = Callable[[], Union[Tuple[List[dict], dict], List[dict]]]
_REGISTERED: Dict[str, Union[str, Loader]] = {}

SPEC_FORMS = ("coco:JSON:IMAGE_DIR", "voc:VOC_DIR:SPLIT", "openimages:DIR:SPLIT[:IMAGE_ID_LIST]",
              "folder:DIR", "synth:DIR:SPLIT")


def dataset_root() -> str:
    return os.environ.get(DETECTRON2_DATASETS, "datasets")


def builtin_specs() -> Dict[str, str]:
    """Every built-in name and the spec it stands for, under the current dataset root."""
    root = dataset_root()
    specs = {}
    for split in ("train", "val"):
        specs[f"coco_2017_{split}"] = (f"coco:{os.path.join(root, 'coco', 'annotations', f'instances_{split}2017.json')}"
                                       f":{os.path.join(root, 'coco', f'{split}2017')}")
    for year in (2007, 2012):
        for split in ("trainval", "train", "val", "test"):
            specs[f"voc_{year}_{split}"] = f"voc:{os.path.join(root, f'VOC{year}')}:{split}"
    for split in ("train", "val", "test"):
        specs[f"objcrop_synth_{split}"] = f"synth:{os.path.join(root, 'objcrop_synth')}:{split}"
    for split in ("train", "validation", "test"):
        specs[f"openimages_{split}"] = f"openimages:{os.path.join(root, 'openimages')}:{split}"
    return specs


def builtin_available(spec: str) -> bool:
    """Whether the files a built-in spec needs are on disk (cheap: no parsing)."""
    kind, rest = spec.split(":", 1)
    if kind == "coco":
        json_file, image_dir = _split_coco(rest, spec)
        return os.path.isfile(json_file) and os.path.isdir(image_dir)
    if kind == "voc":
        d, split = rest.rsplit(":", 1)
        return os.path.isfile(os.path.join(d, "ImageSets", "Main", f"{split}.txt"))
    if kind == "synth":
        d, split = rest.rsplit(":", 1)
        return os.path.isfile(os.path.join(d, "annotations", f"instances_{split}.json"))
    if kind == "openimages":
        from objcrop.datasets.openimages import find_files

        d, split = rest.rsplit(":", 1)
        return os.path.isdir(os.path.join(d, split)) and find_files(d, split, required=False) is not None
    return False


def register_dataset(name: str, source: Union[str, Loader]) -> None:
    """Make `name` loadable: `source` is a spec string or a function returning (records, metadata) or records."""
    if name in builtin_specs():
        raise DatasetError(f"{name}: is a built-in dataset name; choose another")
    _REGISTERED[name] = source


def _split_coco(rest: str, name: str) -> Tuple[str, str]:
    cut = rest.find(".json:")
    if cut < 0:
        raise DatasetError(f"{name}: expected coco:JSON:IMAGE_DIR with a .json file")
    return rest[: cut + 5], rest[cut + 6:]


def _two(rest: str, name: str, form: str) -> Tuple[str, str]:
    if ":" not in rest:
        raise DatasetError(f"{name}: expected {form}")
    a, b = rest.rsplit(":", 1)
    if not a or not b:
        raise DatasetError(f"{name}: expected {form}")
    return a, b


def resolve(name: str) -> Union[str, Loader]:
    """The spec (or loader) a dataset name stands for."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    builtins = builtin_specs()
    if name in builtins:
        return builtins[name]
    if name.split(":", 1)[0] in ("coco", "voc", "openimages", "folder", "synth") and ":" in name:
        return name
    raise DatasetError(f"unknown dataset {name!r}: use a built-in name ({', '.join(sorted(builtins))}) "
                       f"or a spec ({', '.join(SPEC_FORMS)})")


def _load_spec(spec: str, name: str, strict: bool) -> Tuple[List[dict], dict]:
    kind, rest = spec.split(":", 1)
    if kind == "coco":
        from objcrop.datasets.coco import load_coco

        return load_coco(*_split_coco(rest, name), strict=strict)
    if kind == "synth":
        from objcrop.datasets.coco import load_coco

        d, split = _two(rest, name, "synth:DIR:SPLIT")
        json_file = os.path.join(d, "annotations", f"instances_{split}.json")
        if not os.path.isdir(d):
            raise DatasetError(f"{d}: embedded dataset directory not found (make one with `objcrop data synth --out {d}`)")
        return load_coco(json_file, os.path.join(d, "images", split), strict=strict)
    if kind == "voc":
        from objcrop.datasets.voc import load_voc

        return load_voc(*_two(rest, name, "voc:VOC_DIR:SPLIT"), strict=strict)
    if kind == "openimages":
        from objcrop.datasets.openimages import load_openimages

        parts = rest.split(":")
        if len(parts) == 2:
            return load_openimages(parts[0], parts[1], strict=strict)
        if len(parts) == 3:
            return load_openimages(parts[0], parts[1], image_ids_file=parts[2], strict=strict)
        raise DatasetError(f"{name}: expected openimages:DIR:SPLIT[:IMAGE_ID_LIST]")
    if kind == "folder":
        from objcrop.datasets.folder import load_folder

        return load_folder(rest, strict=strict)
    raise DatasetError(f"{name}: unknown dataset kind {kind!r}")


def load_dataset(name: str, strict: bool = False) -> Tuple[List[dict], dict]:
    """(records, metadata) of a built-in name, a registered name or a spec (docs/INTERFACES.md).

    Real datasets' quirks (boxes past the border, degenerate boxes, invalid polygons, unreadable
    images in a plain folder) are repaired and counted in one log line per dataset; `strict=True`
    refuses them instead (objcrop/datasets/quirks.py). Structural faults stop in both modes.
    """
    source = resolve(name)
    if callable(source):
        out = source()
        records, metadata = out if isinstance(out, tuple) else (out, {})
        metadata = {"thing_classes": [], "evaluator_type": None, **metadata}
    else:
        records, metadata = _load_spec(source, name, strict)
    if not records:
        raise DatasetError(f"{name}: empty dataset (no images)")
    metadata = dict(metadata, name=name)
    metadata.setdefault("evaluator_type", None)
    return records, metadata


def dataset_metadata(name: str) -> dict:
    """Metadata of a dataset, without loading its records where that is cheap (COCO: categories only)."""
    source = resolve(name)
    if isinstance(source, str):
        kind, rest = source.split(":", 1)
        if kind in ("coco", "synth"):
            from objcrop.datasets.coco import read_categories

            if kind == "coco":
                json_file, image_root = _split_coco(rest, name)
            else:
                d, split = _two(rest, name, "synth:DIR:SPLIT")
                json_file = os.path.join(d, "annotations", f"instances_{split}.json")
                image_root = os.path.join(d, "images", split)
            classes, id_map = read_categories(json_file)
            return {"name": name, "thing_classes": classes, "thing_dataset_id_to_contiguous_id": id_map,
                    "evaluator_type": "coco", "json_file": os.path.abspath(json_file),
                    "image_root": os.path.abspath(image_root)}
        if kind == "voc":
            from objcrop.datasets.voc import voc_classes

            d, split = _two(rest, name, "voc:VOC_DIR:SPLIT")
            if not os.path.isdir(d):
                raise DatasetError(f"{d}: VOC directory not found")
            classes, year = voc_classes(d)
            return {"name": name, "thing_classes": classes, "evaluator_type": "pascal_voc",
                    "dirname": os.path.abspath(d), "split": split, "year": year}
    return load_dataset(name)[1]
