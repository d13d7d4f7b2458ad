"""Self-supervised methods, looked up by `PRETRAIN.METHOD` in a plain dict.

A method is an nn.Module built by `from_config(cfg, world_size, per_process_batch)`, called as
`method(view1, view2) -> {"loss": scalar, ...metrics}`, with `after_step(progress)` run after each
optimiser step, `backbone` the online torchvision ResNet (its `fc` is the head, not exported) and
`BACKBONE_PREFIX` that ResNet's prefix in the method's state dict.
"""
from objcrop.pretrain.methods.byol import BYOL
from objcrop.pretrain.methods.moco_v2 import MoCoV2

METHODS = {"moco_v2": MoCoV2, "byol": BYOL}

__all__ = ["METHODS", "MoCoV2", "BYOL"]
