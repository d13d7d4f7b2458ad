"""The embedded dataset: deterministic cluttered scenes of filled shapes with instance masks.

`generate(out_dir, num_images, seed, variant)` writes (docs/INTERFACES.md, "Embedded dataset"):

    DIR/meta.json                            classes, generator parameters, counts, version
    DIR/images/{train,val,test}/<id>.jpg
    DIR/annotations/instances_{split}.json   COCO: boxes, polygon masks, categories
    DIR/voc/{JPEGImages,Annotations,ImageSets/Main/{train,val,test,trainval}.txt}
    DIR/labels/{split}.txt                   "<image path relative to DIR> <class_id> ..."

Why it looks the way it does (docs/DESIGN.md, "Small-scale data"):
objects must be big enough for a ResNet stem (which divides resolution by 4,
by 32 at res5) or nothing learns at CPU scale, classes differ by outline and
never by colour (every instance gets a random colour), and the background is
smooth with mild texture and clutter so that a random crop mostly shows
background. The `default` variant is the measured learnable recipe adapted to
10 classes; `hard` has bigger scenes with more, smaller objects (the paper's
regime: random crops rarely frame an object). `study` and `study-hard` are the
small-scale study's data (docs/results.md): the measured 6-class recipe, and the
same objects in pixels in bigger, busier scenes.

Image i depends only on (seed, i), so the same seed gives byte-identical files
and a larger dataset extends a smaller one image by image. The whole directory
is written under a temporary name next to DIR and renamed at the end: a killed
run leaves no half-written dataset.
"""
import dataclasses
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2

# re-exported: the data CLI and tests take the variants and the renderer from here
from objcrop.datasets.scenes import BACKGROUNDS, VARIANTS, SynthParams, _annotations, render_image  # noqa: F401
from objcrop.errors import DatasetError
from objcrop.io import temp_prefix, write_json_atomic

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def split_sizes(num_images: int, fractions: Sequence[float]) -> Dict[str, int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise DatasetError(f"--splits: need three non-negative fractions (train val test), got {list(fractions)}")
    total = float(sum(fractions))
    n_train = int(round(num_images * fractions[0] / total))
    n_val = int(round(num_images * fractions[1] / total))
    n_val = min(n_val, num_images - n_train)
    return {"train": n_train, "val": n_val, "test": num_images - n_train - n_val}


def _voc_xml(file_name: str, size: int, anns: List[dict], classes: Sequence[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "objcrop_synth"
    ET.SubElement(root, "filename").text = file_name
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for a in anns:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[a["category"]]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = a["bbox"]
        # VOC boxes are 1-based and inclusive: pixel columns x .. x+w-1 become xmin=x+1, xmax=x+w.
        for tag, v in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_json(path: str, obj) -> None:
    _write(path, (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8"))


def resolve_params(variant: str = "default", **overrides) -> SynthParams:
    if variant not in VARIANTS:
        raise DatasetError(f"--variant: unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    p = dataclasses.replace(VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None})
    if p.background not in BACKGROUNDS:
        raise DatasetError(f"--background: unknown kind {p.background!r} (choose from {', '.join(BACKGROUNDS)})")
    if p.image_size < 32:
        raise DatasetError(f"--image-size: {p.image_size} is too small (at least 32 px)")
    if not 1 <= p.min_objects <= p.max_objects:
        raise DatasetError(f"--min-objects/--max-objects: need 1 <= min <= max, got {p.min_objects}, {p.max_objects}")
    lo, hi = p.object_scale
    if not 0 < lo <= hi <= 0.9:
        raise DatasetError(f"--object-scale: need 0 < MIN <= MAX <= 0.9, got {lo} {hi}")
    if lo * p.image_size < 5:
        raise DatasetError(f"--object-scale: objects of {lo * p.image_size:.1f} px are too small to draw at --image-size {p.image_size}")
    return p


def _prepare_target(out_dir: str, overwrite: bool) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError(f"{out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise DatasetError(f"{out_dir}: directory exists and is not empty (pass --overwrite to replace it)")


def _publish(tmp: str, out_dir: str) -> None:
    """Move the finished dataset into place; an old one is replaced only once the new one is complete."""
    trash = None
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old.", dir=os.path.dirname(out_dir))
            os.rmdir(trash)
            os.rename(out_dir, trash)
        else:
            os.rmdir(out_dir)
    os.rename(tmp, out_dir)
    if trash:
        shutil.rmtree(trash, ignore_errors=True)


def generate(out_dir: str, num_images: int, seed: int = 0, variant: str = "default",
             image_size: Optional[int] = None, min_objects: Optional[int] = None,
             max_objects: Optional[int] = None, object_scale: Optional[Tuple[float, float]] = None,
             splits: Sequence[float] = (0.7, 0.15, 0.15), overwrite: bool = False,
             progress: bool = True, workers: Optional[int] = None, background: Optional[str] = None) -> dict:
    """Write the embedded dataset to `out_dir` and return its meta.json content.

    `workers`: processes rendering images (default: the CPU count, at most 8); the files do not depend on it.
    """
    from tqdm import tqdm

    if num_images < 1:
        raise DatasetError(f"--num-images: need at least 1 image, got {num_images}")
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    p = resolve_params(variant, image_size=image_size, min_objects=min_objects, max_objects=max_objects,
                       object_scale=tuple(object_scale) if object_scale is not None else None,
                       background=background)
    sizes = split_sizes(num_images, splits)
    out_dir = os.path.abspath(out_dir)
    _prepare_target(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=temp_prefix(out_dir), suffix=".tmp", dir=parent)  # names its writer
    try:
        meta = _generate_into(tmp, num_images, seed, variant, p, sizes, progress, tqdm, workers)
        _publish(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _render_encoded(job: Tuple[int, int, SynthParams]) -> Tuple[bytes, List[dict], bytes]:
    """JPEG bytes, annotations and VOC XML of one image (runs in a worker process)."""
    seed, index, p = job
    img, objects = render_image(seed, index, p)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode synthetic image {index} as JPEG")
    anns = _annotations(objects)
    return jpg.tobytes(), anns, _voc_xml(f"{index:06d}.jpg", p.image_size, anns, p.classes)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend


def _render_all(seed: int, num_images: int, p: SynthParams, workers: int) -> Iterator[Tuple[bytes, List[dict], bytes]]:
    """Images in index order. Each depends only on (seed, index), so worker processes change nothing in the output."""
    jobs = ((seed, i, p) for i in range(num_images))
    if workers <= 1 or num_images < 100:
        yield from map(_render_encoded, jobs)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_render_encoded, jobs, chunksize=16)


def _generate_into(root: str, num_images: int, seed: int, variant: str, p: SynthParams,
                   sizes: Dict[str, int], progress: bool, tqdm, workers: int) -> dict:
    for d in ["annotations", "labels", "voc/JPEGImages", "voc/Annotations", "voc/ImageSets/Main"] + [
            f"images/{s}" for s in SPLITS]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(p.classes)]
    split_of = [s for s in SPLITS for _ in range(sizes[s])]
    coco = {s: {"images": [], "annotations": []} for s in SPLITS}
    labels = {s: [] for s in SPLITS}
    ids = {s: [] for s in SPLITS}
    counts = {"objects": 0, "per_class": [0] * len(p.classes)}
    rendered = _render_all(seed, num_images, p, workers)
    for index, (jpg, anns, xml) in enumerate(tqdm(rendered, total=num_images, desc="synth images", unit="img",
                                                 disable=not progress)):
        split = split_of[index]
        stem = f"{index:06d}"
        _write(os.path.join(root, "images", split, stem + ".jpg"), jpg)
        _write(os.path.join(root, "voc", "JPEGImages", stem + ".jpg"), jpg)
        _write(os.path.join(root, "voc", "Annotations", stem + ".xml"), xml)
        image_id = index + 1
        coco[split]["images"].append({"id": image_id, "file_name": stem + ".jpg", "height": p.image_size, "width": p.image_size})
        for a in anns:
            coco[split]["annotations"].append({
                "id": len(coco[split]["annotations"]) + 1, "image_id": image_id, "category_id": a["category"] + 1,
                "bbox": a["bbox"], "area": a["area"], "segmentation": a["segmentation"], "iscrowd": 0})
            counts["objects"] += 1
            counts["per_class"][a["category"]] += 1
        present = sorted({a["category"] for a in anns})
        labels[split].append(" ".join([f"images/{split}/{stem}.jpg"] + [str(c) for c in present]))
        ids[split].append(stem)
    info = {"description": f"objcrop embedded dataset, variant {variant}, seed {seed}", "version": str(FORMAT_VERSION)}
    for s in SPLITS:
        _write_json(os.path.join(root, "annotations", f"instances_{s}.json"),
                    {"info": info, "licenses": [], "categories": categories, **coco[s]})
        _write(os.path.join(root, "labels", f"{s}.txt"), "".join(line + "\n" for line in labels[s]).encode())
        _write(os.path.join(root, "voc", "ImageSets", "Main", f"{s}.txt"), "".join(i + "\n" for i in ids[s]).encode())
    _write(os.path.join(root, "voc", "ImageSets", "Main", "trainval.txt"),
           "".join(i + "\n" for i in ids["train"] + ids["val"]).encode())
    meta = {"version": FORMAT_VERSION, "generator": "objcrop.datasets.synth", "variant": variant, "seed": seed,
            "num_images": num_images, "splits": sizes, "classes": list(p.classes),
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(p).items()},
            "num_objects": counts["objects"], "objects_per_class": counts["per_class"]}
    write_json_atomic(os.path.join(root, "meta.json"), meta)
    return meta
