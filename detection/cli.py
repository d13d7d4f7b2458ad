"""`objcrop detect train`: detectron2 fine-tuning + evaluation from converted weights, over seeds.

    objcrop detect train --config-file demo/faster_rcnn_R_50_C4_voc.yaml --weights w.pkl --seeds 0 1 2 \\
        --dataset-train voc:DIR/voc:train --dataset-test voc:DIR/voc:val
    objcrop detect train --config-file voc/faster_rcnn_R_50_C4_24k.yaml --weights w.pkl --num-gpus 8
    objcrop detect train --config-file voc/faster_rcnn_R_50_C4_24k_scratch.yaml --seeds 0   # random init
    # two machines with 8 GPUs each; the same command on both, with its own --machine-rank
    objcrop detect train --config-file coco/mask_rcnn_R_50_FPN_1x.yaml --weights w.pkl --num-gpus 8 \
        --num-machines 2 --machine-rank 0 --dist-url tcp://HOST0:29500 --seeds 0 1 2
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from objcrop.cli import run_stage_main
from objcrop.datasets.quirks import STRICT_HELP
from objcrop.errors import ObjcropError


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", required=True, metavar="YAML",
                   help="detectron2 config: a path, or a file shipped in objcrop's eval_configs/ "
                        "(e.g. voc/faster_rcnn_R_50_C4_24k.yaml, coco/mask_rcnn_R_50_FPN_1x.yaml, "
                        "demo/faster_rcnn_R_50_C4_voc.yaml)")
    p.add_argument("--weights", metavar="W.pkl",
                   help="backbone weights written by `objcrop convert`, or 'none' for random init "
                        "(default: the config's MODEL.WEIGHTS)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                   help="one full run per seed, each in OUTPUT_DIR/seed<k> (default: 0)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="root of the run directories (default: output/detection/<config>__<weights>)")
    p.add_argument("--dataset-train", nargs="+", metavar="NAME",
                   help="training dataset names or specs replacing DATASETS.TRAIN (e.g. voc:DIR/voc:train, "
                        "synth:DIR:train, coco:JSON:IMAGES, voc_2007_trainval)")
    p.add_argument("--dataset-test", nargs="+", metavar="NAME",
                   help="test dataset names or specs replacing DATASETS.TEST; results.json reports the first")
    p.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="processes per machine, one per GPU (default 1; a CPU-only machine runs one process)")
    p.add_argument("--num-machines", type=int, default=1, metavar="M", help="number of machines (default 1)")
    p.add_argument("--machine-rank", type=int, default=0, metavar="R", help="rank of this machine, 0..M-1")
    p.add_argument("--dist-url", default="auto", metavar="URL",
                   help="rendezvous of the process group, e.g. tcp://HOST0:PORT (same on every machine); "
                        "'auto' picks a free local port (one machine only)")
    p.add_argument("--strict", action="store_true",
                   help=STRICT_HELP + " (sets OBJCROP.STRICT_DATA; datasets detectron2 registers itself, "
                        "e.g. coco_2017_val, load with detectron2's own rules)")
    p.add_argument("--resume", action="store_true",
                   help="continue each seed from its last checkpoint; seeds whose results.json says ok are skipped")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate: each seed's last checkpoint if it has one, else the weights as given")
    p.add_argument("--no-scale", action="store_true",
                   help="keep the config's batch, lr and schedule even on fewer devices than "
                        "SOLVER.REFERENCE_WORLD_SIZE (default: scale them by the linear rule, logged)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="detectron2 config overrides, e.g. SOLVER.MAX_ITER 200 (must come last)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objcrop detect", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="detectron2 fine-tuning and evaluation over several seeds.",
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.required = True
    train = sub.add_parser("train", formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="fine-tune (or --eval-only) a detection model from converted weights, for each seed",
                           description="Fine-tune a detectron2 model from converted weights and evaluate it, once per "
                                       "seed; each run ends with results.json.",
                           epilog=__doc__.split("\n\n", 1)[1])
    _add_train_arguments(train)
    return p


def _check_before_launch(args) -> None:
    """Fail in the launching process, as one line, on what would otherwise fail in every worker."""
    from detectron2.utils import comm  # noqa: F401  (imports detectron2 once, before workers start)

    from objcrop.detection.train_net import setup

    if args.num_machines > 1 and args.dist_url == "auto":
        raise ObjcropError("--dist-url auto works on one machine only; give tcp://HOST0:PORT on every machine")
    log = logging.getLogger("objcrop.detect")
    level = log.level
    log.setLevel(logging.ERROR)  # the workers log the same adjustments again, for their run directories
    try:
        setup(args, args.seeds[0], args.num_gpus * args.num_machines)
    finally:
        log.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ObjcropError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is repeated")
    from detectron2.engine import launch

    from objcrop.detection.train_net import main as train_main, run_dir

    _check_before_launch(args)
    launch(train_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    if args.machine_rank != 0:
        return 0
    return _summarise([run_dir(args, s) for s in args.seeds])


def _summarise(run_dirs: List[str]) -> int:
    """One line per seed from its results.json; non-zero exit when any run failed or wrote nothing."""
    from objcrop.records import read_results

    failed = 0
    for d in run_dirs:
        path = os.path.join(d, "results.json")
        if not os.path.isfile(path):
            print(f"{d}: no results.json (the run did not finish)")
            failed += 1
            continue
        r = read_results(path)
        mask = f"  mask {r['mask']}" if r.get("mask") else ""
        print(f"{d}: {r['status']}  {r['task']} on {r['dataset']}  box {r['box']}{mask}")
        failed += r["status"] != "ok"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop detect"))
