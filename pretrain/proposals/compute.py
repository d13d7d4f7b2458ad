"""Compute a proposal store for a dataset: parallel, with a progress bar, resumable.

Finished images are appended, one json line each, to shard files in `<store>.parts/`; every
run (first or resumed) appends to a new shard, so a line cut short by a kill is simply
skipped and recomputed. When every image is done, the store is written from the shards
sorted by image id (ProposalStore.write sorts), so a killed-and-resumed run ends with a
store byte-identical to an uninterrupted one. The store's meta holds only what decides
its content (method, parameters, filters, dataset), never timings or worker counts.
"""
import atexit
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import partial
from itertools import islice
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from objcrop.errors import ObjcropError
from objcrop.io import read_json, write_json_atomic
from objcrop.pretrain.proposals.methods import IMAGE_METHODS, MethodSpec, check_method, propose
from objcrop.pretrain.proposals.store import ProposalStore

logger = logging.getLogger("objcrop.proposals")


def parts_dir(out: str) -> str:
    return os.fspath(out) + ".parts"


def work_items(records: Sequence[dict], spec: MethodSpec, file_boxes: Optional[Dict[Any, list]] = None) -> List[dict]:
    """What a worker needs of each record (small, picklable)."""
    items, seen = [], set()
    for r in records:
        image_id = r["image_id"]
        if image_id in seen:
            raise ObjcropError(f"{r.get('file_name', image_id)}: duplicate image id {image_id!r} in the dataset")
        seen.add(image_id)
        item = {"image_id": image_id, "file_name": r["file_name"], "height": r["height"], "width": r["width"]}
        if spec.name == "gt":
            item["annotations"] = r.get("annotations", [])
        if spec.name == "file":
            item["file_boxes"] = (file_boxes or {}).get(image_id, [])
        items.append(item)
    return items


def run_params(spec: MethodSpec, items: Sequence[dict], dataset: Optional[str]) -> Dict[str, Any]:
    ids = sorted(repr(i["image_id"]) for i in items)
    params = {"method": spec.name, "params": spec.as_meta(), "dataset": dataset, "num_images": len(items),
              "image_ids_sha256": hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()}
    # As json holds them (tuples become lists), so that comparing with a params.json or a store's
    # meta compares values, not container types.
    return json.loads(json.dumps(params))


def compute_store(items: Sequence[dict], spec: MethodSpec, out: str, workers: int = 1, resume: bool = False,
                  dataset: Optional[str] = None, progress: bool = True) -> str:
    """Compute proposals for every item and write the store `out`; returns its path."""
    from tqdm import tqdm

    check_method(spec)
    params = run_params(spec, items, dataset)
    parts = parts_dir(out)
    if resume and os.path.isfile(out) and not os.path.isdir(parts) and _same_params(out, params):
        logger.info("%s: already complete for these settings (%d images); nothing to do", out, len(items))
        return out
    done = _prepare_parts(parts, params, resume)
    todo = [item for item in items if item["image_id"] not in done]
    logger.info("%s: %d images, %d already done, %d to compute with %s on %d worker(s)",
                out, len(items), len(items) - len(todo), len(todo), spec.name, workers)
    if todo:
        shard = _new_shard(parts)
        with open(shard, "a", encoding="utf-8") as f, \
                tqdm(total=len(items), initial=len(items) - len(todo), desc=f"proposals {spec.name}",
                     unit="img", disable=not progress) as bar:
            for result in _map(spec, todo, workers):
                image_id = result[0]
                f.write(json.dumps(_encode(result)) + "\n")
                f.flush()
                done[image_id] = result
                bar.update(1)
    return _assemble(out, items, done, params, spec)


def _map(spec: MethodSpec, items: List[dict], workers: int) -> Iterable:
    """Proposals of every item, as they finish, on `workers` processes: this one and `workers - 1` pool
    workers. This process computes too: it would otherwise only wait, and a pool of `workers` spawned
    processes cost one more start (interpreter, numpy, OpenCV: the CPU columns of benchmarks/bench_proposals.py),
    the part of a short store's time that kept 2 workers from 1.8x one (issue 22 §4)."""
    if workers <= 1 or len(items) == 1:
        return map(partial(propose, spec), items)
    # An image method costs milliseconds to seconds per image, so one image per task: bigger chunks
    # leave a worker idle at the end while the other finishes its last chunk. gt and file boxes cost
    # microseconds, and there the round trips would dominate.
    chunk = 1 if spec.name in IMAGE_METHODS else max(1, min(16, len(items) // (workers * 8)))
    chunks = (items[i:i + chunk] for i in range(0, len(items), chunk))
    return _pool_results(worker_pool(workers - 1), partial(_propose_chunk, spec), chunks,
                         window=4 * (workers - 1), local=_one_opencv_thread)


def _propose_chunk(spec: MethodSpec, items: List[dict]) -> List[tuple]:
    return [propose(spec, item) for item in items]


def _one_opencv_thread(fn, chunk: List[dict]) -> List[tuple]:
    """fn(chunk) here, on one OpenCV thread as in the pool's workers (the process's setting is restored:
    the caller may be a trainer or a test with threads of its own)."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return fn(chunk)
    finally:
        cv2.setNumThreads(threads)


def _pool_results(pool, fn, chunks: Iterator[List[dict]], window: int, local=None) -> Iterator[tuple]:
    """Results of fn over chunks, as they finish, with at most `window` chunks submitted at once (a
    million-image dataset must not become a million futures). With `local` (a runner: local(fn, chunk)),
    this process takes the next chunk itself whenever no submitted one has finished, so it works while
    the pool's workers start and run; once the chunks run out it takes back submitted chunks no worker
    has started, so that the last images do not queue behind one worker while this process waits."""
    finished = False
    try:
        pending = {pool.submit(fn, chunk): chunk for chunk in islice(chunks, window)}
        while pending:
            if local is not None and not any(future.done() for future in pending):
                chunk = next(chunks, None)
                if chunk is None:
                    chunk = _take_back(pending)
                if chunk is not None:
                    yield from local(fn, chunk)
                    continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                del pending[future]
                yield from future.result()
                pending.update((pool.submit(fn, chunk), chunk) for chunk in islice(chunks, 1))
        finished = True
    finally:
        if not finished:  # an error or a stop: the pool may still hold this store's work, which must not run on
            close_worker_pool()


def _take_back(pending: Dict[Any, List[dict]]) -> Optional[List[dict]]:
    """The chunk of the last submitted future that no worker has started (cancelled and removed from
    `pending`), or None when every one has started."""
    for future in reversed(list(pending)):
        if future.cancel():
            return pending.pop(future)
    return None


_POOL: Dict[str, Any] = {"workers": 0, "pool": None}


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """This process's pool of `workers` proposal workers, started on first use and kept for every later
    store and shard: starting workers (spawn, then importing numpy and OpenCV) is what kept 2 workers from
    2x on a few hundred images (issue 22; benchmarks/bench_proposals.py's CPU columns show the cost).
    `--workers N` starts N - 1 of them: the process that asks computes beside them (_map).

    A concurrent.futures pool, not multiprocessing.Pool: Pool.terminate() first takes the task queue's
    read lock, which an idle worker holds while it waits for work, and a test run hung there for good
    after a failed store. Shutting an executor down hands each worker a stop sentinel instead."""
    if _POOL["pool"] is None or _POOL["workers"] != workers:
        close_worker_pool()
        # spawn, not fork: the caller may hold torch/OpenMP threads (tests, the trainer), and a
        # forked child of a threaded process can deadlock. Workers import only numpy/OpenCV (and
        # SciPy/scikit-image when a saliency method needs them).
        _POOL["pool"] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        _POOL["workers"] = workers
    return _POOL["pool"]


def worker_pids() -> List[int]:
    """The process ids of the pool's live workers (none when there is no pool)."""
    pool = _POOL["pool"]
    return sorted(p.pid for p in (getattr(pool, "_processes", None) or {}).values()) if pool else []


def close_worker_pool() -> None:
    """Stop the pool of worker_pool (if any); the next store starts a new one. Work not yet started is
    cancelled; the few tasks already handed to a worker (one or two each) finish, and nothing reads them."""
    pool, _POOL["pool"], _POOL["workers"] = _POOL["pool"], None, 0
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(close_worker_pool)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per core: OpenCV's own threads would only oversubscribe


# -- shards ----------------------------------------------------------------------------
def _prepare_parts(parts: str, params: Dict[str, Any], resume: bool) -> Dict[Any, tuple]:
    params_file = os.path.join(parts, "params.json")
    if os.path.isdir(parts):
        if not resume:
            raise ObjcropError(f"{parts}: an interrupted run left finished images here; pass --resume to "
                               f"continue it, or delete the folder to start over")
        if not os.path.isfile(params_file) or read_json(params_file) != params:
            raise ObjcropError(f"{parts}: was started with other settings or another dataset "
                               f"(see {params_file}); delete the folder or rerun with those settings")
        return _read_shards(parts)
    os.makedirs(parts)
    write_json_atomic(params_file, params)
    return {}


def _new_shard(parts: str) -> str:
    existing = glob.glob(os.path.join(parts, "shard-*.jsonl"))
    return os.path.join(parts, f"shard-{len(existing):04d}.jsonl")


def _encode(result) -> Dict[str, Any]:
    image_id, boxes, scores, mask = result
    line = {"id": image_id, "boxes": boxes.reshape(-1).tolist(), "scores": scores.tolist()}
    if mask is not None:
        runs, shape, size = mask
        line["mask"] = [runs.tolist(), list(shape), list(size)]
    return line


def _decode(line: Dict[str, Any]) -> tuple:
    mask = line.get("mask")
    if mask is not None:
        mask = (np.asarray(mask[0], np.uint32), tuple(mask[1]), tuple(mask[2]))
    return (line["id"], np.asarray(line["boxes"], np.float32).reshape(-1, 4),
            np.asarray(line["scores"], np.float32), mask)


def _read_shards(parts: str) -> Dict[Any, tuple]:
    done: Dict[Any, tuple] = {}
    skipped = 0
    for shard in sorted(glob.glob(os.path.join(parts, "shard-*.jsonl"))):
        with open(shard, "r", encoding="utf-8") as f:
            for text in f:
                try:
                    result = _decode(json.loads(text))
                except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
                    skipped += 1  # a line cut short when the run was killed
                    continue
                done[result[0]] = result
    if skipped:
        logger.info("%s: skipped %d incomplete line(s) from an interrupted run; those images are recomputed", parts, skipped)
    return done


def _same_params(out: str, params: Dict[str, Any]) -> bool:
    try:
        meta = ProposalStore.open(out).meta
    except ObjcropError:
        return False
    return all(meta.get(k) == v for k, v in params.items())


def _assemble(out: str, items: Sequence[dict], done: Dict[Any, tuple], params: Dict[str, Any], spec: MethodSpec) -> str:
    results = [done[item["image_id"]] for item in items]
    masks = {r[0]: r[3] for r in results}
    has_masks = any(m is not None for m in masks.values())
    ProposalStore.write(out, ((r[0], r[1], r[2]) for r in results), dict(params), masks=masks if has_masks else None)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    n_boxes = sum(len(r[1]) for r in results)
    empty = sum(1 for r in results if len(r[1]) == 0)
    logger.info("%s: wrote %d images, %d boxes (%.1f per image), %d images without any box%s",
                out, len(results), n_boxes, n_boxes / max(len(results), 1), empty,
                ", with saliency masks" if has_masks else "")
    return out


# -- boxes from a file -------------------------------------------------------------------
def load_file_boxes(path: str, records: Sequence[dict]) -> Dict[Any, list]:
    """Boxes a user already has: COCO detections/instances json, {image: [[x, y, w, h(, score)], ...]}, or
    (a `.npy` file) object-cropping-ssl's released precomputed boxes (objcrop.pretrain.proposals.released_boxes).

    Images are matched by image id, then by file name (relative path, base name, or base name
    without extension). Returns {image_id: rows}.
    """
    by_key: Dict[str, Any] = {}
    for r in records:
        name = r["file_name"]
        base = os.path.basename(name)
        for key in (str(r["image_id"]), name, base, os.path.splitext(base)[0]):
            by_key.setdefault(key, r["image_id"])
    if os.fspath(path).endswith(".npy"):
        from objcrop.pretrain.proposals.released_boxes import released_boxes

        sizes = {r["image_id"]: (int(r["width"]), int(r["height"])) for r in records}
        out, unmatched = released_boxes(path, lambda key: by_key.get(key, by_key.get(os.path.basename(key))), sizes)
        return _matched(path, out, unmatched)
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    out: Dict[Any, list] = {}
    unmatched = 0
    if isinstance(data, list):
        for k, det in enumerate(data):
            if not isinstance(det, dict) or "image_id" not in det or "bbox" not in det or len(det["bbox"]) != 4:
                raise ObjcropError(f"{path}: entry {k} is not a detection {{'image_id', 'bbox': [x, y, w, h], 'score'}}")
            image_id = by_key.get(str(det["image_id"]))
            if image_id is None:
                unmatched += 1
                continue
            out.setdefault(image_id, []).append(list(det["bbox"]) + [float(det.get("score", 1.0))])
    elif isinstance(data, dict):
        for key, rows in data.items():
            if not isinstance(rows, list) or not all(isinstance(b, list) and len(b) in (4, 5) for b in rows):
                raise ObjcropError(f"{path}: boxes of {key!r} must be a list of [x, y, w, h] or [x, y, w, h, score]")
            image_id = by_key.get(str(key), by_key.get(os.path.basename(str(key))))
            if image_id is None:
                unmatched += 1
                continue
            out.setdefault(image_id, []).extend(rows)
    else:
        raise ObjcropError(f"{path}: expected a COCO detections list or an {{image: [[x, y, w, h], ...]}} object")
    return _matched(path, out, unmatched)


def _matched(path: str, out: Dict[Any, list], unmatched: int) -> Dict[Any, list]:
    if not out:
        raise ObjcropError(f"{path}: none of its images match the dataset's image ids or file names")
    if unmatched:
        logger.warning("%s: %d entries name images that are not in the dataset; ignored", path, unmatched)
    return out


def default_filter_for(method: str):
    """SoCo's filters for unsupervised methods; none for boxes that are already final (gt, file)."""
    from objcrop.pretrain.proposals.filters import NO_FILTER, BoxFilter

    return BoxFilter() if method in IMAGE_METHODS else NO_FILTER
