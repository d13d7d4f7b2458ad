"""`objcrop proposals compute | stats | show`: unsupervised object proposals for a dataset."""
import argparse
import logging
import sys
from typing import List, Optional

import numpy as np

from objcrop.cli import run_stage_main
from objcrop.errors import ObjcropError
from objcrop.logger import setup_logger
from objcrop.pretrain.proposals.compute import compute_store, default_filter_for, load_file_boxes, work_items
from objcrop.pretrain.proposals.filters import BoxFilter
from objcrop.pretrain.proposals.methods import METHODS, MethodSpec, check_method
from objcrop.pretrain.proposals.store import ProposalStore

DESCRIPTION = __doc__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop proposals", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")
    c = sub.add_parser("compute", help="compute proposals for every image of a dataset into a store",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Compute proposals for every image of a dataset and write a proposal store "
                                   "(boxes in original image pixels). Resumable with --resume.")
    c.add_argument("--dataset", required=True, help="dataset name or spec, as objcrop.datasets.load_dataset takes it "
                   "(e.g. synth:DIR:train, coco_2017_train, voc:DIR:trainval, folder:DIR)")
    c.add_argument("--method", required=True, choices=METHODS, help="proposal method (see the module docstring of "
                   "objcrop.pretrain.proposals.methods); gt = annotation boxes, the upper bound")
    c.add_argument("--out", required=True, help="the store file to write (masks, when the method has them, go to OUT.masks)")
    c.add_argument("--workers", type=int, default=1, help="worker processes (one image per process at a time)")
    c.add_argument("--max-side", type=int, default=500, help="image methods run on a copy whose longer side is at "
                   "most this (boxes are mapped back to the original); 0 = full resolution")
    c.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.parts/ (same settings "
                   "required); the result is identical to an uninterrupted run")
    c.add_argument("--limit", type=int, default=None, help="only the first N images of the dataset (quick trials)")
    c.add_argument("--ss-mode", choices=("fast", "quality"), default="fast", help="selective search strategy")
    c.add_argument("--superpixels", type=int, default=200, help="SLIC segments for saliency-rbd / -gs / -mc")
    c.add_argument("--bing-model", default=None, help="folder with OpenCV's trained BING model "
                   "(opencv_contrib modules/saliency/samples/ObjectnessTrainedModel); required by --method bing")
    c.add_argument("--file", default=None, help="--method file: COCO detections json ([{image_id, bbox, score}]) "
                   "or {image id or file name: [[x, y, w, h(, score)], ...]}")
    f = c.add_argument_group("filters", "applied in original pixels; defaults: SoCo's for unsupervised methods, "
                                        "none for gt and file")
    f.add_argument("--min-size", type=float, default=None, help="minimum width and height in pixels (32)")
    f.add_argument("--min-size-fraction", type=float, default=None,
                   help="cap --min-size at this fraction of the image's shorter side, for small images (0.1; 0 = no cap)")
    f.add_argument("--aspect-ratio", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="allowed width/height range (1/3 3)")
    f.add_argument("--area", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="allowed box area as a fraction of the image area (0 1)")
    f.add_argument("--nms", type=float, default=None, help="non-maximum suppression IoU threshold (off)")
    f.add_argument("--top-k", type=int, default=None, help="keep the K best-scored boxes per image (all)")

    s = sub.add_parser("stats", help="boxes per image, size histogram, recall against ground truth",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Summarise a store; with --dataset, also recall@IoU against its annotations.")
    s.add_argument("--store", required=True, help="proposal store file")
    s.add_argument("--dataset", default=None, help="dataset with ground-truth boxes for recall")
    s.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.7], help="IoU thresholds for recall")
    s.add_argument("--json", default=None, help="also write the statistics to this json file")

    w = sub.add_parser("show", help="draw proposals on images (PNG grid)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Draw the best-scored proposals (red = best) and ground truth (white) on images.")
    w.add_argument("--store", required=True, help="proposal store file")
    w.add_argument("--dataset", required=True, help="the dataset the store was computed for")
    w.add_argument("--out", required=True, help="PNG file to write")
    w.add_argument("--num-images", type=int, default=8, help="images to draw")
    w.add_argument("--top", type=int, default=10, help="proposals drawn per image")
    w.add_argument("--seed", type=int, default=0, help="which images are picked")
    w.add_argument("--cell", type=int, default=256, help="size of each image in the grid, pixels")
    w.add_argument("--no-gt", action="store_true", help="do not draw ground-truth boxes")
    return p


def _load(dataset: str, limit: Optional[int] = None):
    from objcrop.datasets import load_dataset

    records, meta = load_dataset(dataset)
    if limit is not None:
        records = records[: max(0, limit)]
    if not records:
        raise ObjcropError(f"--dataset {dataset}: no images")
    return records, meta


def _filter(args) -> BoxFilter:
    base = default_filter_for(args.method)
    return BoxFilter(min_size=base.min_size if args.min_size is None else args.min_size,
                     min_size_fraction=(base.min_size_fraction if args.min_size_fraction is None
                                        else args.min_size_fraction),
                     aspect_ratio=base.aspect_ratio if args.aspect_ratio is None else tuple(args.aspect_ratio),
                     area=base.area if args.area is None else tuple(args.area),
                     nms_iou=args.nms, top_k=args.top_k)


def cmd_compute(args, log: logging.Logger) -> int:
    spec = MethodSpec(name=args.method, max_side=args.max_side, ss_mode=args.ss_mode, superpixels=args.superpixels,
                      bing_model=args.bing_model, filter=_filter(args))
    check_method(spec)
    if args.workers < 1:
        raise ObjcropError(f"--workers: expected at least 1, got {args.workers}")
    if args.method == "file" and not args.file:
        raise ObjcropError("--file: required by --method file")
    records, _ = _load(args.dataset, args.limit)
    file_boxes = load_file_boxes(args.file, records) if args.method == "file" else None
    items = work_items(records, spec, file_boxes)
    log.info("proposals %s for %s (%d images) -> %s; filters %s", args.method, args.dataset, len(items), args.out,
             spec.filter.as_dict())
    compute_store(items, spec, args.out, workers=args.workers, resume=args.resume, dataset=args.dataset)
    return 0


def cmd_stats(args, log: logging.Logger) -> int:
    from objcrop.io import write_json_atomic
    from objcrop.pretrain.proposals.evaluate import format_stats, store_stats

    store = ProposalStore.open(args.store)
    records = _load(args.dataset)[0] if args.dataset else None
    stats = store_stats(store, records, args.iou)
    print(format_stats(stats))
    if args.json:
        write_json_atomic(args.json, stats)
        log.info("statistics written to %s", args.json)
    return 0


def cmd_show(args, log: logging.Logger) -> int:
    from objcrop.datasets import read_image
    from objcrop.pretrain.proposals.draw import GT_COLOUR, draw_boxes, grid, label, write_png
    from objcrop.pretrain.proposals.evaluate import gt_boxes

    store = ProposalStore.open(args.store)
    records, _ = _load(args.dataset)
    picked = np.random.default_rng(args.seed).permutation(len(records))[: max(1, args.num_images)]
    cells = []
    for i in sorted(picked.tolist()):
        r = records[i]
        rgb = read_image(r["file_name"])
        boxes, _ = store.get(r["image_id"], (np.zeros((0, 4), np.float32), None))
        if not args.no_gt:
            rgb = draw_boxes(rgb, gt_boxes(r), [GT_COLOUR] * len(gt_boxes(r)), thickness=1)
        thickness = max(1, int(round(max(rgb.shape[:2]) / 250)))
        rgb = draw_boxes(rgb, boxes[: args.top], thickness=thickness)
        cells.append(label(rgb, f"{r['image_id']}: {len(boxes)} boxes"))
    cols = int(np.ceil(np.sqrt(len(cells))))
    write_png(args.out, grid([cells[k:k + cols] for k in range(0, len(cells), cols)], cell=args.cell))
    log.info("drew %d images of %s with up to %d proposals each -> %s", len(cells), args.store, args.top, args.out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    log = setup_logger("objcrop.proposals")
    return {"compute": cmd_compute, "stats": cmd_stats, "show": cmd_show}[args.command](args, log)


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop proposals"))
