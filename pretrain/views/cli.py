"""`objcrop views show`: draw sampled view pairs of a crop policy, before spending GPU-days on it.
`objcrop views stats`: how often a policy's views hold an object, and how much of them objects cover.

In `show`, each row is one image: first with its proposals (red = best scored), then for every sampled
pair the image with the two crop boxes (view 1 green, view 2 magenta, the chosen proposal
yellow) followed by the two augmented views, de-normalised. With --geometry both, each image has two
rows drawn with the same seeds: objcrop's crop geometry, then the released code's (VIEWS.GEOMETRY).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from objcrop.cli import run_stage_main
from objcrop.config import merge_config
from objcrop.datasets.quirks import STRICT_HELP
from objcrop.errors import ObjcropError
from objcrop.logger import setup_logger

logger = logging.getLogger("objcrop.views")
CROP1, CROP2, SOURCE = (40, 220, 40), (230, 40, 230), (250, 220, 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop views", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="command")
    s = sub.add_parser("show", help="write a PNG grid of images, their proposals and sampled view pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    s.add_argument("--dataset", required=True, help="dataset name or spec (objcrop.datasets.load_dataset)")
    s.add_argument("--policy", default=None, help="view policy (random, obj-obj, obj-obj-dilate, obj-scene); "
                   "default: VIEWS.POLICY of --config")
    s.add_argument("--proposals", default=None, help="proposal store, or 'gt' for annotated boxes; default: "
                   "DATA.PROPOSALS of --config, else 'gt'")
    s.add_argument("--config", default=None, help="a pretraining YAML (its VIEWS and DATA keys are used)")
    s.add_argument("--copy-paste", action="store_true", help="wrap the policy in DiLo copy-paste (needs masks; "
                   "VIEWS.COPY_PASTE.MODE dilo draws it per view, shared once per pair)")
    s.add_argument("--geometry", choices=["objcrop", "released", "both"], default=None,
                   help="crop geometry (VIEWS.GEOMETRY): objcrop's, the released code's (object-cropping-ssl), or "
                        "both, one row each per image with the same seeds; default: VIEWS.GEOMETRY of --config")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--num-images", type=int, default=4, help="rows (images)")
    s.add_argument("--pairs", type=int, default=3, help="view pairs sampled per image")
    s.add_argument("--seed", type=int, default=0, help="picks the images and seeds the views")
    s.add_argument("--cell", type=int, default=128, help="size of each grid cell, pixels")
    s.add_argument("--strict", action="store_true", help=STRICT_HELP)
    s.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs overriding the config, "
                   "e.g. VIEWS.CROP_SIZE 64 VIEWS.MIN_BOX_FRACTION 0.25")
    t = sub.add_parser("stats", help="measure policies' view pairs against the annotated objects "
                       "(objcrop.pretrain.views.stats): views holding half / all of an object, pairs showing the "
                       "same object, object cover", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Sample view pairs with the real policies (boxes as pretraining gets them) and "
                                   "measure them against the objects (instance masks when present, else boxes). "
                                   "Several --policy values give one table row each, e.g. --policy random obj-obj "
                                   "obj-obj-dilate (what `objcrop data crop-stats` used to compare).")
    t.add_argument("--dataset", required=True, help="dataset with instance annotations (masks or boxes)")
    t.add_argument("--policy", nargs="+", default=None, help="view policy or policies; default: VIEWS.POLICY of --config")
    t.add_argument("--proposals", default=None, help="proposal store, or 'gt'; default: DATA.PROPOSALS of "
                   "--config, else 'gt'")
    t.add_argument("--config", default=None, help="a pretraining YAML (its VIEWS and DATA keys are used)")
    t.add_argument("--num-images", type=int, default=500, help="first N images of the dataset (0 = all)")
    t.add_argument("--pairs", type=int, default=10, help="view pairs sampled per image")
    t.add_argument("--seed", type=int, default=0, help="seeds the views")
    t.add_argument("--json", default=None, help="also write the numbers to this json file: one policy's numbers, "
                   "or a list of them (one per --policy) when several were given")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--strict", action="store_true", help=STRICT_HELP)
    t.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs overriding the config")
    return p


def load_records(args) -> list:
    """The records of --dataset (quirks refused with --strict); ObjcropError when there are none."""
    from objcrop.datasets import load_dataset

    records, _ = load_dataset(args.dataset, strict=args.strict)
    if not records:
        raise ObjcropError(f"--dataset {args.dataset}: no images")
    return records


def cmd_stats(args, log) -> int:
    from objcrop.io import write_json_atomic
    from objcrop.pretrain.views.stats import format_view_stats

    records = load_records(args)
    records = records[:args.num_images] if args.num_images > 0 else records
    rows = {}
    for policy in args.policy or [None]:
        stats = _policy_stats(args, policy, records)
        rows[f"{stats['policy']} ({os.path.basename(stats['proposals'])})"] = stats
    print(format_view_stats(rows))
    if args.json:
        values = list(rows.values())
        write_json_atomic(args.json, values[0] if len(values) == 1 else values)
    return 0


def _policy_stats(args, policy: Optional[str], records) -> dict:
    from objcrop.pretrain.views import build_view_policy
    from objcrop.pretrain.views.stats import policy_view_stats

    cfg = _config(args, policy=policy)  # crop geometry only: `stats` has no --copy-paste
    source, get_boxes, _ = _box_source(args, cfg)
    view_policy = build_view_policy(cfg)
    stats = policy_view_stats(records, view_policy, lambda r: get_boxes(r)[0], args.pairs, args.seed,
                              progress=not args.no_progress)
    if stats["images"] == 0:
        raise ObjcropError(f"--dataset {args.dataset}: no image has annotated objects to measure views against")
    source = source if view_policy.uses_boxes else "none"  # random crops never look at the boxes
    stats.update({"policy": cfg.VIEWS.POLICY, "geometry": cfg.VIEWS.get("GEOMETRY", "objcrop"), "proposals": source,
                  "dataset": args.dataset})
    logger.info("views stats: policy %s, boxes from %s, %d images x %d pairs", cfg.VIEWS.POLICY, source,
                stats["images"], args.pairs)
    return stats


def _config(args, copy_paste: bool = False, policy: Optional[str] = None, geometry: Optional[str] = None):
    """The views config of `args` (--config, --opts, and `policy` or --policy); copy_paste wraps the
    policy in DiLo copy-paste; geometry sets VIEWS.GEOMETRY."""
    try:
        from objcrop.pretrain.config import get_pretrain_cfg as defaults
    except ImportError:  # pragma: no cover - the views package alone
        from objcrop.pretrain.views.config import get_views_cfg as defaults
    opts = list(args.opts or [])
    policy = policy or (args.policy if isinstance(getattr(args, "policy", None), str) else None)
    if policy:
        opts += ["VIEWS.POLICY", policy]
    if copy_paste:
        opts += ["VIEWS.COPY_PASTE.ENABLED", "True"]
    if geometry:
        opts += ["VIEWS.GEOMETRY", geometry]
    return merge_config(defaults, args.config, opts)


def _box_source(args, cfg):
    spec = args.proposals if args.proposals is not None else (cfg.DATA.PROPOSALS if "DATA" in cfg else "") or "gt"
    if spec == "gt":
        from objcrop.datasets.boxes import gt_boxes
        from objcrop.pretrain.proposals.methods import annotation_mask

        return "gt", (lambda r: (gt_boxes(r), np.ones(len(gt_boxes(r)), np.float32))), \
            (lambda r: annotation_mask(r.get("annotations", []), int(r["height"]), int(r["width"])))
    from objcrop.pretrain.proposals import ProposalStore

    store = ProposalStore.open(spec)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    # DiLo composites with the continuous saliency map; the shared variant with the binary mask.
    soft = "VIEWS" in cfg and cfg.VIEWS.COPY_PASTE.MODE == "dilo"
    read_mask = store.get_alpha if soft else store.get_mask
    return spec, (lambda r: store.get(r["image_id"], empty)), (lambda r: read_mask(r["image_id"]) if r["image_id"] in store else None)


def _to_uint8(view: torch.Tensor, mean, std) -> np.ndarray:
    x = view * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def cmd_show(args, log) -> int:
    from objcrop.datasets import read_image
    from objcrop.pretrain.proposals.draw import grid, write_png
    from objcrop.pretrain.views import build_view_policy

    records = load_records(args)
    geometries = {"both": ["objcrop", "released"], None: [None]}.get(args.geometry, [args.geometry])
    # one policy per geometry; the same seeds draw the same boxes, so rows of one image compare
    cfgs = [_config(args, copy_paste=args.copy_paste, geometry=geometry) for geometry in geometries]
    policies = [build_view_policy(cfg) for cfg in cfgs]
    source, get_boxes, get_mask = _box_source(args, cfgs[0])
    picked = sorted(np.random.default_rng(args.seed).permutation(len(records))[: max(1, args.num_images)].tolist())
    rows: List[List[np.ndarray]] = []
    for row_index, i in enumerate(picked):
        r = records[i]
        rgb = read_image(r["file_name"])
        boxes, _ = get_boxes(r)
        mask = get_mask(r) if cfgs[0].VIEWS.COPY_PASTE.ENABLED else None
        for cfg, policy in zip(cfgs, policies):
            name = f" ({cfg.VIEWS.GEOMETRY})" if len(cfgs) > 1 else ""
            rows.append(_show_row(args, cfg.VIEWS, policy, r, rgb, boxes, mask, row_index, name))
    write_png(args.out, grid(rows, cell=args.cell))
    log.info("views show: policy %s, geometry %s, boxes from %s, %d rows x %d pairs -> %s (fallbacks: %d)",
             getattr(policies[0], "name", cfgs[0].VIEWS.POLICY), "/".join(c.VIEWS.GEOMETRY for c in cfgs), source,
             len(rows), args.pairs, args.out, sum(p.fallbacks for p in policies))
    return 0


def _show_row(args, v, policy, record, rgb, boxes, mask, row_index: int, name: str) -> List[np.ndarray]:
    """One grid row: the image with its proposals, then per pair the crops drawn on it and the two views."""
    from objcrop.pretrain.proposals.draw import draw_boxes, label

    thick = max(1, int(round(max(rgb.shape[:2]) / 200)))
    row = [label(draw_boxes(rgb, boxes[:20], thickness=thick), f"{record['image_id']}: {len(boxes)} boxes{name}")]
    image = torch.tensor(rgb).permute(2, 0, 1).contiguous()  # a writable copy
    for k in range(args.pairs):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + row_index * 1009 + k)
        used, plan, views = policy.sample(image, boxes, mask, g, render_image=True)
        canvas = used.permute(1, 2, 0).numpy()
        drawn = [plan.source_box] if plan.source_box is not None else []
        # released crops may reach past the image: drawn clipped to it
        crops = np.asarray(drawn + list(plan.crops), np.float32).reshape(-1, 4)
        crops[:, 0::2] = crops[:, 0::2].clip(0, rgb.shape[1] - 1)
        crops[:, 1::2] = crops[:, 1::2].clip(0, rgb.shape[0] - 1)
        canvas = draw_boxes(canvas, crops, [SOURCE] * len(drawn) + [CROP1, CROP2], thickness=thick)
        tag = "fallback" if plan.fallback else ("swapped" if plan.swapped else "")
        row += [label(canvas, f"pair {k + 1} {tag}".strip())] + [_to_uint8(x, v.PIXEL_MEAN, v.PIXEL_STD) for x in views]
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    return {"show": cmd_show, "stats": cmd_stats}[args.command](args, setup_logger("objcrop.views"))


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop views"))
