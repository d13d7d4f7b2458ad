"""Self-supervised methods, looked up by `PRETRAIN.METHOD` in a plain dict.

A method is an nn.Module built by `from_config(cfg, world_size, per_process_batch)`, called as
`method(view1, view2) -> {"loss": scalar, ...metrics}` (the trainer logs every other entry to
metrics.jsonl and TensorBoard as it is, so a method's own metrics need no trainer code), with
`after_step(progress)` run after each optimiser step, `log_setup(logger, world_size)` stating its
settings once, `backbone` the online torchvision ResNet (its `fc` is the head, not exported),
`BACKBONE_PREFIX` that ResNet's prefix in the method's state dict and `SYNC_BN` whether its BN
layers become SyncBN under multi-process CUDA training. The trainer has no per-method code.
"""
from objcrop.pretrain.methods.byol import BYOL
from objcrop.pretrain.methods.moco_v2 import MoCoV2

METHODS = {"moco_v2": MoCoV2, "byol": BYOL}

__all__ = ["METHODS", "MoCoV2", "BYOL"]
