"""`objcrop <stage> ...`: one console script, one subcommand per pipeline stage.

Each stage module exposes `main(argv: list[str] | None) -> int` and also runs
as `python -m <module>`. Modules are imported only when their stage is run, so
`objcrop --help` works without detectron2 and the core imports no stage.
"""
import argparse
import importlib
import sys
from typing import List, Optional

from objcrop.errors import ObjcropError

# stage -> (module, one-line description), in pipeline order.
STAGES = {
    "doctor": ("objcrop.doctor", "check the environment: versions, compiled ops, devices, datasets"),
    "data": ("objcrop.datasets.cli", "generate the embedded synthetic dataset; inspect any dataset"),
    "proposals": ("objcrop.pretrain.proposals.cli", "compute, inspect and draw unsupervised object proposals"),
    "views": ("objcrop.pretrain.views.cli", "draw sampled view pairs of a crop policy"),
    "pretrain": ("objcrop.pretrain.train_net", "self-supervised pretraining (MoCo-v2, BYOL) of a ResNet"),
    "probe": ("objcrop.pretrain.probe", "linear-probe (mAP) and kNN evaluation of a frozen backbone"),
    "convert": ("objcrop.convert.cli", "convert a checkpoint to detectron2 format and verify it loads"),
    "detect": ("objcrop.detection.cli", "detectron2 fine-tuning and evaluation over several seeds"),
    "report": ("objcrop.report.cli", "collect results.json files into tables and plots"),
    "pipeline": ("objcrop.pipeline.cli", "every stage above from a preset, locally or on SLURM (scripts/run_pipeline.sh)"),
}

# What each stage needs of the packages the user brings (objcrop/requirements.py): checked before
# the stage is imported, so a missing or too old torch / detectron2 is one line, not a traceback.
STAGE_NEEDS = {
    "views": ("torch", "torchvision"),
    "pretrain": ("torch", "torchvision"),
    "probe": ("torch", "torchvision"),
    "convert": ("torch",),
    "detect": ("torch", "torchvision", "detectron2"),
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(s) for s in STAGES)
    stages = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in STAGES.items())
    p = argparse.ArgumentParser(
        prog="objcrop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmark suite for self-supervised pretraining with object-aware cropping.",
        epilog=f"stages:\n{stages}\n\nRun `objcrop <stage> --help` for the options of a stage.",
    )
    p.add_argument("--version", action="store_true", help="print objcrop's version and exit")
    p.add_argument("stage", nargs="?", choices=list(STAGES), metavar="stage", help="the stage to run (listed below)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the stage")
    return p


def run_stage_main(stage_main, argv: Optional[List[str]], prog: str) -> int:
    """Run a stage's main, turning an ObjcropError into one line on stderr and exit code 2."""
    try:
        return int(stage_main(argv) or 0)
    except ObjcropError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from objcrop import __version__

        print(f"objcrop {__version__}")
        return 0
    if not args.stage:
        _parser().print_help()
        return 1
    prog = f"objcrop {args.stage}"
    needs = STAGE_NEEDS.get(args.stage, ())
    if needs and not ({"-h", "--help"} & set(args.args)):
        from objcrop.requirements import require

        status = run_stage_main(lambda _argv: require(*needs), None, prog)
        if status:
            return status
    module = importlib.import_module(STAGES[args.stage][0])
    return run_stage_main(module.main, args.args, prog)


if __name__ == "__main__":
    sys.exit(main())
