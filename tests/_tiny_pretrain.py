"""The tiny pretraining run the engine tests start as a subprocess: ResNet-18 on 32-px crops of the
small generated dataset, a 16-key queue, ground-truth boxes (shared by test_pretrain_engine.py and
test_pretrain_execution_keys.py)."""
import os
import sys

TINY = ["PRETRAIN.ARCH", "resnet18", "PRETRAIN.MOCO.K", "16", "PRETRAIN.MOCO.MLP_HIDDEN", "64",
        "PRETRAIN.MOCO.DIM", "32", "VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate",
        "DATA.PROPOSALS", "gt"]


def env(threads: int = 1) -> dict:
    """The environment of a single-process run with `threads` torch threads (no torchrun variables)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def pretrain_cmd(synth_dir, out_dir, *opts, resume: bool = False) -> list:
    """`python -m objcrop.pretrain.train_net [--resume] --opts TINY … OUTPUT_DIR out_dir *opts`."""
    return [sys.executable, "-m", "objcrop.pretrain.train_net", *(["--resume"] if resume else []), "--opts", *TINY,
            "DATA.DATASET", f"synth:{synth_dir}:train", "OUTPUT_DIR", str(out_dir), *opts]
