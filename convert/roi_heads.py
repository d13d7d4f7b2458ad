"""MoCo's C4 ROI head: an extra norm after res5 (He et al. 2020, detection/train_net.py).

With SyncBN in the backbone, res5 (which runs inside the ROI head in C4
models) ends in a residual add with no normalisation; MoCo's protocol adds one
norm layer there so fine-tuned features are normalised like the pretrained
ones. Selected in YAML by `MODEL.ROI_HEADS.NAME: Res5ROIHeadsExtraNorm`.
"""
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

__all__ = ["Res5ROIHeadsExtraNorm"]


def _register(cls):
    # Importing this module twice (e.g. as objcrop.convert.roi_heads and by
    # a user script) must not trip the registry's duplicate-name assertion.
    if cls.__name__ not in ROI_HEADS_REGISTRY:
        ROI_HEADS_REGISTRY.register(cls)
    return cls


@_register
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with a MODEL.RESNETS.NORM layer appended to res5 (as `res5.norm`)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels
