"""`objcrop pretrain`: self-supervised pretraining of a ResNet (MoCo-v2, BYOL) with a crop policy.

Thin, like detectron2's tools/train_net.py: setup() merges defaults <- YAML <- --opts, writes the
merged config.yaml, seeds and logs; the engine (objcrop.pretrain.engine.trainer) does the rest.
Run several processes with torchrun, e.g.
    torchrun --nproc_per_node 8 -m objcrop.pretrain.train_net --config-file pretrain/mocov2_r50_objobjdilate_200e_coco.yaml
"""
import argparse
import os
import sys
from typing import List, Optional

# Set before torch loads OpenMP: on a CPU shared with data workers or other jobs, OpenMP threads that
# spin while they wait made a ResNet step 4-6x slower (measured under load, see the pretraining
# benchmark notes); waiting passively costs little on an idle machine. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from objcrop.cli import run_stage_main
from objcrop.config import merge_config, write_config
from objcrop.logger import setup_logger


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objcrop pretrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Self-supervised pretraining (MoCo-v2 or BYOL) of a torchvision ResNet with a view policy.",
        epilog="Presets ship in eval_configs/pretrain/ (e.g. pretrain/demo.yaml). Every config key is documented "
               "in objcrop/pretrain/config.py. Multi-process: torchrun [--nnodes N ...] --nproc_per_node P "
               "-m objcrop.pretrain.train_net ...; the effective batch PRETRAIN.BATCH_SIZE is split over processes.")
    p.add_argument("--config-file", default="", metavar="FILE",
                   help="YAML preset: a path, or a name under eval_configs/ such as pretrain/demo.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in OUTPUT_DIR/checkpoints (damaged ones are "
                        "skipped); without it a run starts afresh and removes old checkpoints of that directory")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="override config keys, e.g. --opts PRETRAIN.EPOCHS 2 DATA.PROPOSALS gt")
    return p


def setup(args):
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import init_distributed
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    cfg = merge_config(get_pretrain_cfg, args.config_file, args.opts)
    ctx = init_distributed(cfg.PRETRAIN.DEVICE)
    trainer = PretrainTrainer(cfg, ctx, logger=None)
    logger = setup_logger("objcrop.pretrain", trainer.output_dir, ctx.rank)
    trainer.logger = trainer.checkpointer.logger = logger
    if ctx.is_main:
        path = write_config(cfg, trainer.output_dir)
        logger.info(f"config: {path}")
    import torch

    logger.info(f"rank {ctx.rank}/{ctx.world_size} on {ctx.device} ({ctx.backend or 'single process'}); "
                f"torch {torch.__version__}, {torch.get_num_threads()} threads; run dir {trainer.output_dir}")
    return trainer


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from objcrop.pretrain.distributed import cleanup

    try:
        trainer = setup(args)
        trainer.train(resume=args.resume)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop pretrain"))
