"""`objcrop proposals compute | stats | show`: unsupervised object proposals for a dataset."""
import argparse
import logging
import sys
from typing import List, Optional

import numpy as np

from objcrop.cli import run_stage_main
from objcrop.config import CfgNode, merge_config
from objcrop.errors import ObjcropError
from objcrop.io import write_text_atomic
from objcrop.logger import setup_logger
from objcrop.pretrain.cli_flags import PRECEDENCE, add_config_args, add_flags, flag_opts
from objcrop.pretrain.proposals.compute import compute_store, load_file_boxes, work_items
from objcrop.pretrain.proposals.config import (COMPUTE_FLAGS, FILTER_FLAGS, check_proposals_cfg, get_proposals_cfg,
                                               method_spec)
from objcrop.pretrain.proposals.methods import check_method
from objcrop.pretrain.proposals.store import ProposalStore

DESCRIPTION = __doc__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop proposals", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")
    defaults = get_proposals_cfg()
    c = sub.add_parser("compute", help="compute proposals for every image of a dataset into a store",
                       description="Compute proposals for every image of a dataset and write a proposal store "
                                   "(boxes in original image pixels) and, beside it, STORE.config.yaml (the merged "
                                   "config). Resumable with --resume.",
                       epilog=f"{PRECEDENCE}. Every key is documented in objcrop/pretrain/proposals/config.py; "
                              "presets ship in eval_configs/proposals/. Required: DATA.DATASET, PROPOSALS.METHOD "
                              "and OUTPUT_FILE, from flags, the file or --opts.")
    add_config_args(c, "proposals/selective_search.yaml", "FILTER.TOP_K 10 COMPUTE.WORKERS 4")
    c.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.parts/ (same settings "
                   "required); the result is identical to an uninterrupted run")
    add_flags(c, COMPUTE_FLAGS, defaults)
    add_flags(c.add_argument_group("filters", "applied in original pixels; none = the method's default: SoCo's "
                                              "for unsupervised methods, none for gt and file"), FILTER_FLAGS, defaults)

    s = sub.add_parser("stats", help="boxes per image, size histogram, recall against ground truth",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Summarise a store; with --dataset, also recall@IoU against its annotations.")
    s.add_argument("--store", required=True, help="proposal store file")
    s.add_argument("--dataset", default=None, help="dataset with ground-truth boxes for recall")
    s.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.7],
                   help="IoU thresholds for recall (objects some proposal covers) and on-object (proposals that "
                        "cover some object)")
    s.add_argument("--top-k", type=int, default=0,
                   help="count only each image's K best-scored boxes, as DATA.PROPOSALS_TOPK K trains on (0: all)")
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


def _load(dataset: str, limit: Optional[int] = None, strict: bool = False):
    from objcrop.datasets import load_dataset

    records, meta = load_dataset(dataset, strict=strict)
    if limit is not None:
        records = records[: max(0, limit)]
    if not records:
        raise ObjcropError(f"--dataset {dataset}: no images")
    return records, meta


def compute_cfg(args) -> CfgNode:
    """defaults <- --config-file <- flags <- --opts, frozen and checked."""
    cfg = merge_config(get_proposals_cfg, args.config_file, flag_opts(args, COMPUTE_FLAGS + FILTER_FLAGS)
                       + list(args.opts))
    check_proposals_cfg(cfg, args.config_file or "objcrop proposals compute")
    return cfg


def config_path(store: str) -> str:
    """Where the merged config of a store is written: beside it, so the store's own format is untouched."""
    return store + ".config.yaml"


def cmd_compute(args, log: logging.Logger) -> int:
    cfg = compute_cfg(args)
    spec = method_spec(cfg)
    check_method(spec)
    workers, method, dataset, out = cfg.COMPUTE.WORKERS, cfg.PROPOSALS.METHOD, cfg.DATA.DATASET, cfg.OUTPUT_FILE
    if workers < 1:
        raise ObjcropError(f"--workers: expected at least 1, got {workers}")
    if method == "file" and not cfg.PROPOSALS.FILE:
        raise ObjcropError("--file: required by --method file")
    records, _ = _load(dataset, cfg.DATA.LIMIT, cfg.DATA.STRICT)
    file_boxes = load_file_boxes(cfg.PROPOSALS.FILE, records) if method == "file" else None
    items = work_items(records, spec, file_boxes)
    log.info("proposals %s for %s (%d images) -> %s; filters %s", method, dataset, len(items), out,
             spec.filter.as_dict())
    compute_store(items, spec, out, workers=workers, resume=args.resume, dataset=dataset)
    write_text_atomic(config_path(out), cfg.dump())
    log.info("config: %s", config_path(out))
    return 0


def cmd_stats(args, log: logging.Logger) -> int:
    from objcrop.io import write_json_atomic
    from objcrop.pretrain.proposals.evaluate import format_stats, store_stats

    if args.top_k < 0:
        raise ObjcropError(f"--top-k {args.top_k}: must be 0 (every box) or a positive number of boxes")
    store = ProposalStore.open(args.store)
    records = _load(args.dataset)[0] if args.dataset else None
    stats = store_stats(store, records, args.iou, args.top_k)
    print(format_stats(stats))
    if args.json:
        write_json_atomic(args.json, stats)
        log.info("statistics written to %s", args.json)
    return 0


def cmd_show(args, log: logging.Logger) -> int:
    from objcrop.datasets import read_image
    from objcrop.pretrain.proposals.draw import GT_COLOUR, draw_boxes, grid, label, write_png
    from objcrop.datasets.boxes import gt_boxes

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
