"""`objcrop data …`: generate the embedded dataset; inspect any dataset.

    objcrop data synth --out datasets/objcrop_synth --num-images 2000 --seed 0
    objcrop data synth --out datasets/synth_hard --num-images 2000 --variant hard
    objcrop data list
    objcrop data info synth:datasets/objcrop_synth:train

What crops of a dataset see is measured by the view policies themselves:
    objcrop views stats --dataset synth:datasets/objcrop_synth:train --policy random obj-obj obj-obj-dilate
"""
import argparse
import os
import sys
from typing import List, Optional

from objcrop.cli import run_stage_main
from objcrop.datasets.catalog import SPEC_FORMS, builtin_available, builtin_specs, dataset_root, load_dataset
from objcrop.datasets.synth import BACKGROUNDS, VARIANTS
from objcrop.errors import ObjcropError
from objcrop.io import write_json_atomic

MOVED = ("`objcrop data crop-stats` moved to `objcrop views stats`, which measures the real view policies: "
         "objcrop views stats --dataset NAME --policy random obj-obj obj-obj-dilate --proposals gt")
NAME_HELP = f"a built-in name (see `objcrop data list`) or a spec: {', '.join(SPEC_FORMS)}"


def _add_synth(sub) -> None:
    d = VARIANTS["default"]
    h = VARIANTS["hard"]
    p = sub.add_parser("synth", help="generate the embedded synthetic dataset",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Write deterministic cluttered scenes of filled shapes with COCO json (boxes, "
                                   "polygon masks), a VOC-layout copy and multi-label lists (docs/INTERFACES.md). "
                                   f"Variant 'default': {d.image_size}-px images, {d.min_objects}-{d.max_objects} "
                                   f"objects of {d.object_scale[0]:.0%}-{d.object_scale[1]:.0%} of the side (learnable "
                                   f"at CPU scale). Variant 'hard': {h.image_size} px, {h.min_objects}-{h.max_objects} "
                                   f"objects of {h.object_scale[0]:.0%}-{h.object_scale[1]:.0%}, more clutter "
                                   "(the paper's regime). Options below override the variant.")
    p.add_argument("--out", required=True, help="output directory (must be absent or empty unless --overwrite)")
    p.add_argument("--num-images", type=int, default=2000, help="number of images over all splits")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    p.add_argument("--variant", choices=list(VARIANTS), default="default", help="scene recipe")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the variant's)")
    p.add_argument("--min-objects", type=int, default=None, help="fewest objects per image (default: the variant's)")
    p.add_argument("--max-objects", type=int, default=None, help="most objects per image (default: the variant's)")
    p.add_argument("--object-scale", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="object size as a fraction of the image side (default: the variant's)")
    p.add_argument("--background", choices=list(BACKGROUNDS), default=None,
                   help="textured: every image its own colour gradient, blotches and texture; flat: one grey for all, "
                        "so views cannot be matched by their background (default: the variant's)")
    p.add_argument("--splits", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=[0.7, 0.15, 0.15],
                   help="split fractions (normalised to sum 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset (only once the new one is complete)")
    p.add_argument("--workers", type=int, default=None,
                   help="rendering processes (default: CPU count, at most 8); the output does not depend on it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    _add_synth(sub)
    sub.add_parser("list", help="built-in dataset names and whether their files are under the dataset root",
                   description=f"Built-in names under $DETECTRON2_DATASETS (default ./datasets; now {dataset_root()}).")
    info = sub.add_parser("info", help="counts, classes, boxes per image, object sizes",
                          description="Load a dataset and print what it holds.")
    info.add_argument("name", help=NAME_HELP)
    info.add_argument("--strict", action="store_true", help="an unreadable image in a plain folder is an error, not skipped")
    info.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to this json file")
    # Moved (issue 19): view statistics come from the real policies, which live in a stage the core
    # must not import. The name stays so that old scripts get a pointer, not "invalid choice".
    moved = sub.add_parser("crop-stats", help="moved: use `objcrop views stats` (the real view policies)",
                           description=MOVED)
    moved.add_argument("args", nargs=argparse.REMAINDER, help="ignored")
    return p


def _synth(args) -> int:
    from objcrop.datasets.synth import generate

    meta = generate(args.out, num_images=args.num_images, seed=args.seed, variant=args.variant,
                    image_size=args.image_size, min_objects=args.min_objects, max_objects=args.max_objects,
                    object_scale=args.object_scale, splits=args.splits, overwrite=args.overwrite,
                    progress=not args.no_progress, workers=args.workers, background=args.background)
    print(f"wrote {meta['num_images']} images ({', '.join(f'{k} {v}' for k, v in meta['splits'].items())}), "
          f"{meta['num_objects']} objects of {len(meta['classes'])} classes to {os.path.abspath(args.out)}")
    return 0


def _list(_args) -> int:
    print(f"dataset root: {os.path.abspath(dataset_root())} ($DETECTRON2_DATASETS)")
    for name, spec in builtin_specs().items():
        print(f"  {'found  ' if builtin_available(spec) else 'missing'}  {name:<26} {spec}")
    return 0


def _info(args) -> int:
    from objcrop.datasets.stats import dataset_info, format_info

    records, metadata = load_dataset(args.name, strict=args.strict)
    info = dataset_info(records, metadata)
    if metadata.get("num_skipped"):
        info["skipped_images"] = metadata["num_skipped"]
    print(format_info(info))
    if metadata.get("num_skipped"):
        print(f"skipped {metadata['num_skipped']} unreadable image(s)")
    if args.json:
        write_json_atomic(args.json, info)
    return 0


def _crop_stats(args) -> int:
    raise ObjcropError(MOVED)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return {"synth": _synth, "list": _list, "info": _info, "crop-stats": _crop_stats}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop data"))
