"""Proposal methods: one image record in, boxes (original pixels), scores and an optional mask out.

    gt                     annotation boxes (the paper's upper bound), union of GT masks kept
    selective-search       OpenCV contrib, --ss-mode fast | quality
    saliency-spectral      OpenCV spectral residual saliency      \\
    saliency-fine-grained  OpenCV fine-grained saliency            |  map -> Otsu (+ levels)
    saliency-rbd           Zhu et al. CVPR 2014                    |  -> components -> boxes,
    saliency-gs            Wei et al. ECCV 2012                    |  foreground mask kept
    saliency-mc            Jiang et al. ICCV 2013                 /
    bing                   OpenCV ObjectnessBING with the user's trained model folder
    file                   boxes the user already has (COCO detections json, {image: [[x,y,w,h],...]}, or
                           object-cropping-ssl's released .npy dicts: released_boxes.py)

Image methods run on a copy downscaled so that its longer side is at most `max_side`; boxes
are mapped back to the original image, masks are kept at the computed size with the
original size recorded (the store upsamples them on reading).
"""
import contextlib
import ctypes
import ctypes.util
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from objcrop.datasets.boxes import gt_boxes, object_annotations, xywh_to_xyxy
from objcrop.errors import ObjcropError
from objcrop.pretrain.proposals.filters import BoxFilter
from objcrop.pretrain.proposals.saliency import SALIENCY_METHODS, saliency_boxes
from objcrop.pretrain.proposals.store import encode_mask_rle

IMAGE_METHODS = ("selective-search", "bing") + tuple(SALIENCY_METHODS)
METHODS = ("gt", "file") + IMAGE_METHODS
BING_FILES = ("ObjNessB2W8MAXBGR.idx.yml.gz", "ObjNessB2W8MAXBGR.wS1.yml.gz", "ObjNessB2W8MAXBGR.wS2.yml.gz")
BING_HELP = ("BING needs OpenCV's trained objectness model: download the folder "
             "modules/saliency/samples/ObjectnessTrainedModel from the opencv_contrib repository "
             f"(files {', '.join(BING_FILES)}, ...) and pass it as --bing-model DIR")


@dataclass(frozen=True)
class MethodSpec:
    """Everything that decides a method's output (stored in the store's meta and the resume check)."""
    name: str
    max_side: int = 500                  # 0: never downscale
    ss_mode: str = "fast"                # selective search: fast | quality
    superpixels: int = 200               # saliency-rbd / -gs / -mc: SLIC segments
    bing_model: Optional[str] = None
    filter: BoxFilter = field(default_factory=BoxFilter)

    def as_meta(self) -> Dict[str, Any]:
        meta = asdict(self)
        meta["filter"] = self.filter.as_dict()
        if self.bing_model:
            meta["bing_model"] = os.path.abspath(self.bing_model)
        return meta


Result = Tuple[Any, np.ndarray, np.ndarray, Optional[Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]]]


def check_method(spec: MethodSpec) -> None:
    if spec.name not in METHODS:
        raise ObjcropError(f"--method: unknown method {spec.name!r}; choose one of {', '.join(METHODS)}")
    if spec.ss_mode not in ("fast", "quality"):
        raise ObjcropError(f"--ss-mode: expected fast or quality, got {spec.ss_mode!r}")
    if spec.name == "bing":
        if not spec.bing_model:
            raise ObjcropError(f"--bing-model: missing. {BING_HELP}")
        missing = [f for f in BING_FILES if not os.path.isfile(os.path.join(spec.bing_model, f))]
        if missing:
            raise ObjcropError(f"{spec.bing_model}: not a BING model folder (missing {', '.join(missing)}). {BING_HELP}")
    if spec.name in IMAGE_METHODS and spec.max_side < 0:
        raise ObjcropError(f"--max-side: expected a positive size or 0 (no downscaling), got {spec.max_side}")


def propose(spec: MethodSpec, item: Dict[str, Any]) -> Result:
    """(image_id, boxes float32 [n, 4] XYXY original pixels, scores float32 [n], encoded mask or None)."""
    if spec.name == "gt":
        boxes, scores, mask = gt_proposals(item)
        width, height = int(item["width"]), int(item["height"])
    elif spec.name == "file":
        boxes, scores, mask = file_proposals(item)
        width, height = int(item["width"]), int(item["height"])
    else:
        boxes, scores, mask, (height, width) = image_proposals(spec, item)
    boxes, scores = spec.filter(boxes, scores, width, height)
    encoded = None if mask is None else (encode_mask_rle(mask), tuple(mask.shape), (height, width))
    return item["image_id"], boxes, scores, encoded


# -- gt and file -----------------------------------------------------------------------
def gt_proposals(item: Dict[str, Any]):
    anns = object_annotations(item)
    boxes = gt_boxes(item)
    scores = np.ones(len(boxes), np.float32)
    return boxes, scores, annotation_mask(anns, int(item["height"]), int(item["width"]))


def annotation_mask(anns: List[dict], height: int, width: int) -> Optional[np.ndarray]:
    """Union of the annotations' masks (polygons or RLE), uint8 [H, W]; None without any mask."""
    mask = np.zeros((height, width), np.uint8)
    found = False
    for a in anns:
        segm = a.get("segmentation")
        if not segm:
            continue
        if isinstance(segm, dict):
            from pycocotools import mask as mask_util

            rle = mask_util.frPyObjects(segm, *segm["size"]) if isinstance(segm["counts"], list) else segm
            mask |= mask_util.decode(rle).astype(np.uint8)[:height, :width]
            found = True
        else:
            polys = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32) for p in segm if len(p) >= 6]
            if polys:
                cv2.fillPoly(mask, polys, 1)
                found = True
    return mask if found else None


def file_proposals(item: Dict[str, Any]):
    rows = item.get("file_boxes") or []
    boxes = np.asarray([xywh_to_xyxy(r) for r in rows], np.float32).reshape(-1, 4)
    scores = np.asarray([float(r[4]) if len(r) > 4 else 1.0 for r in rows], np.float32)
    return boxes, scores, None


# -- image methods ---------------------------------------------------------------------
def read_rgb(path: str) -> np.ndarray:
    from objcrop.datasets import read_image

    return read_image(path)


def downscale(rgb: np.ndarray, max_side: int) -> Tuple[np.ndarray, float, float]:
    """The image with its longer side <= max_side, and the factors (sx, sy) back to the original."""
    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return rgb, 1.0, 1.0
    scale = max_side / float(max(height, width))
    w, h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), width / w, height / h


def image_proposals(spec: MethodSpec, item: Dict[str, Any]):
    rgb = read_rgb(item["file_name"])
    height, width = rgb.shape[:2]
    small, sx, sy = downscale(rgb, spec.max_side)
    mask = None
    if spec.name == "selective-search":
        boxes, scores = selective_search(small, spec.ss_mode)
    elif spec.name == "bing":
        boxes, scores = bing(small, spec.bing_model)
    else:
        fn = SALIENCY_METHODS[spec.name]
        saliency = fn(small, n_segments=spec.superpixels) if spec.name in ("saliency-rbd", "saliency-gs", "saliency-mc") else fn(small)
        boxes, scores, mask = saliency_boxes(saliency)
    boxes = boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
    return boxes.astype(np.float32), scores, mask, (height, width)


_LIBC = None


def _libc():
    """The C library (ctypes), or None where it cannot be found."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    return _LIBC or None


def _seed_libc_rand(seed: int = 0) -> bool:
    """OpenCV's selective search ranks regions with C's rand(): seed it so that every run (and a
    resumed run) gives the same order. Returns False where no C library can be found."""
    libc = _libc()
    if libc is None:
        return False
    libc.srand(ctypes.c_uint(seed))
    return True


def selective_search(rgb: np.ndarray, mode: str = "fast") -> Tuple[np.ndarray, np.ndarray]:
    """Selective search (Uijlings et al. 2013) boxes, best-ranked first; score = 1 - rank / n."""
    seeded = _seed_libc_rand(0)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if mode == "quality":
        ss.switchToSelectiveSearchQuality()
    else:
        ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)
    if not seeded:  # no deterministic ranking available: fall back to a canonical order
        rects = rects[np.lexsort(rects.T[::-1])]
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    scores = 1.0 - np.arange(len(boxes), dtype=np.float32) / max(len(boxes), 1)
    return boxes, scores


_BING: Dict[str, Any] = {}


@contextlib.contextmanager
def _c_output_silenced():
    """Send file descriptors 1 and 2 to /dev/null for the duration: OpenCV's BING printf()s a
    timing line per image and logs an error for each colour-space model it does not find (HSV
    and I, deliberately left out below), bypassing sys.stdout / sys.stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        libc = _libc()
        if libc is not None:
            libc.fflush(None)  # flush C's buffers while they still point at /dev/null
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def _bing_detector(model_dir: str):
    """One ObjectnessBING per process, reading only the MAXBGR model (see `bing`)."""
    if model_dir not in _BING:
        import atexit
        import shutil
        import tempfile

        work = tempfile.mkdtemp(prefix="objcrop-bing-")
        atexit.register(shutil.rmtree, work, True)
        for name in BING_FILES:
            os.symlink(os.path.abspath(os.path.join(model_dir, name)), os.path.join(work, name))
        b = cv2.saliency.ObjectnessBING_create()
        b.setTrainingPath(work)
        # OpenCV writes every image's boxes to <results dir>/BBoxes*/bb.txt; by default that
        # directory is relative to "" — keep it in the private folder.
        b.setBBResDir(os.path.join(work, "results"))
        _BING[model_dir] = b
    return _BING[model_dir]


def bing(rgb: np.ndarray, model_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV's BING objectness (Cheng et al. CVPR 2014) with a trained model folder.

    OpenCV 4.x runs every colour-space model it finds (MAXBGR, HSV, I) and merges them with
    synthetic values (i + 300) * {1, 3, 5} sorted in descending order, so its output lists each
    model's proposals worst-first and the models interleaved. Only the MAXBGR model is linked
    into the detector's folder, so the output is that model's proposals in reverse rank order;
    reversing gives BING's own ranking, scored 1 - rank / n. Boxes come as 1-based (minX, minY,
    maxX, maxY) inclusive corners.
    """
    detector = _bing_detector(model_dir)
    with _c_output_silenced():
        ok, found = detector.computeSaliency(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok or found is None or len(found) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes = np.asarray(found, np.float32).reshape(-1, 4)[::-1].copy()
    boxes[:, :2] -= 1.0
    scores = 1.0 - np.arange(len(boxes), dtype=np.float32) / len(boxes)
    return boxes, scores
