"""objcrop.pretrain.views: object-aware view pairs for self-supervised pretraining.

`build_view_policy(cfg)` turns a config carrying `VIEWS` (see `config.add_views_config`)
into a callable `policy(image, boxes, mask=None, generator=None) -> (view1, view2)`.
"""
from typing import TYPE_CHECKING, Callable, Optional

from fvcore.common.config import CfgNode

from objcrop.errors import ConfigError
from objcrop.pretrain.views.config import (AUGMENT_ON, BACKGROUNDS, COPY_PASTE_MODES, GEOMETRIES, MODE_BACKGROUNDS,
                                          POLICIES, add_views_config, get_views_cfg)

if TYPE_CHECKING:
    from objcrop.pretrain.views.augment import MocoV2Augment

__all__ = ["add_views_config", "get_views_cfg", "build_view_policy", "defer_augment", "ViewPolicy", "ViewPlan", "POLICIES"]
# Imported on first use (PEP 562): the policies and augmentations import torch (seconds), and reading
# or planning a config (`objcrop pipeline --dry-run`, pretrain/config.py) needs only views.config.
_LAZY = {"ViewPolicy": "policies", "ViewPlan": "policies", "POLICY_CLASSES": "policies",
         "MocoV2Augment": "augment", "DeferredAugment": "augment"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def build_view_policy(cfg: CfgNode, background_fn: Optional[Callable] = None):
    """The policy named by cfg.VIEWS.POLICY, wrapped in DiLo copy-paste when VIEWS.COPY_PASTE.ENABLED.

    background_fn(generator) -> uint8 [3, h, w] supplies "image" backgrounds for copy-paste
    (the dataset passes one that returns another of its images); without it, copy-paste
    uses the other background kinds.
    """
    from objcrop.pretrain.views.policies import POLICY_CLASSES

    v = cfg.VIEWS if "VIEWS" in cfg else cfg
    validate_views_cfg(v)
    policy = POLICY_CLASSES[v.POLICY](v)
    if v.COPY_PASTE.ENABLED:
        from objcrop.pretrain.views.copy_paste import CopyPaste

        cp = v.COPY_PASTE
        policy = CopyPaste(policy, prob=cp.PROB, blur_prob=cp.BLUR_PROB,
                           backgrounds=tuple(cp.BACKGROUNDS) or MODE_BACKGROUNDS[cp.MODE],
                           background_fn=background_fn, mode=cp.MODE, edge_sigma=cp.EDGE_SIGMA)
    return policy


def defer_augment(policy) -> "MocoV2Augment":
    """Make `policy` return (uint8 crop, drawn parameters) per view instead of augmented pixels
    (VIEWS.AUGMENT_ON "device"); returns the augmentation, whose `apply_batch` the trainer runs."""
    from objcrop.pretrain.views.augment import DeferredAugment

    inner = getattr(policy, "policy", policy)  # DiLo copy-paste wraps the policy that augments
    if not isinstance(inner.augment, DeferredAugment):
        inner.augment = DeferredAugment(inner.augment)
    return inner.augment.augment


def validate_views_cfg(v: CfgNode) -> None:
    """Reject settings that would crash or silently do something else, naming the key."""
    if v.AUGMENT_ON not in AUGMENT_ON:
        raise ConfigError(f"VIEWS.AUGMENT_ON: expected one of {', '.join(AUGMENT_ON)}, got {v.AUGMENT_ON!r}")
    if v.POLICY not in POLICIES:
        raise ConfigError(f"VIEWS.POLICY: unknown policy {v.POLICY!r}; choose one of {', '.join(POLICIES)}")
    if int(v.CROP_SIZE) < 8:
        raise ConfigError(f"VIEWS.CROP_SIZE: must be at least 8 pixels, got {v.CROP_SIZE}")
    for key in ("SCALE_OBJ", "SCALE_DILATE", "RANDOM_SCALE", "DILATION", "RATIO", "BLUR_SIGMA"):
        lo, hi = (float(x) for x in v[key])
        if lo < 0 or lo > hi:
            raise ConfigError(f"VIEWS.{key}: expected 0 <= low <= high, got ({lo}, {hi})")
    for key in ("SCALE_OBJ", "SCALE_DILATE", "RANDOM_SCALE"):
        if float(v[key][1]) > 1:
            raise ConfigError(f"VIEWS.{key}: an area fraction above 1 is not a crop, got {tuple(v[key])}")
    if float(v.RATIO[0]) <= 0:
        raise ConfigError(f"VIEWS.RATIO: aspect ratios must be positive, got {tuple(v.RATIO)}")
    probs = {"SWAP_PROB": [v.SWAP_PROB], "COLOR_JITTER_PROB": [v.COLOR_JITTER_PROB],
             "GRAYSCALE_PROB": [v.GRAYSCALE_PROB], "FLIP_PROB": [v.FLIP_PROB], "BLUR_PROB": list(v.BLUR_PROB),
             "SOLARIZE_PROB": list(v.SOLARIZE_PROB), "COPY_PASTE.PROB": [v.COPY_PASTE.PROB],
             "COPY_PASTE.BLUR_PROB": [v.COPY_PASTE.BLUR_PROB]}
    for key, values in probs.items():
        if not all(0.0 <= float(p) <= 1.0 for p in values):
            raise ConfigError(f"VIEWS.{key}: probabilities must lie in [0, 1], got {values}")
    if len(v.BLUR_PROB) != 2 or len(v.SOLARIZE_PROB) != 2:
        raise ConfigError("VIEWS.BLUR_PROB / VIEWS.SOLARIZE_PROB: expected one probability per view, (view1, view2)")
    if len(v.COLOR_JITTER) != 4:
        raise ConfigError(f"VIEWS.COLOR_JITTER: expected (brightness, contrast, saturation, hue), got {tuple(v.COLOR_JITTER)}")
    if min(float(x) for x in v.COLOR_JITTER) < 0 or float(v.COLOR_JITTER[3]) > 0.5:
        raise ConfigError(f"VIEWS.COLOR_JITTER: strengths must be >= 0 and the hue's at most 0.5 (half the colour "
                          f"circle, torchvision's limit), got {tuple(v.COLOR_JITTER)}")
    if not 0 <= float(v.MIN_BOX_FRACTION) <= 1:
        raise ConfigError(f"VIEWS.MIN_BOX_FRACTION: expected a fraction in [0, 1], got {v.MIN_BOX_FRACTION}")
    _validate_copy_paste(v.COPY_PASTE)
    if v.GEOMETRY not in GEOMETRIES:
        raise ConfigError(f"VIEWS.GEOMETRY: expected one of {', '.join(GEOMETRIES)}, got {v.GEOMETRY!r}")
    if not 0 <= float(v.RELEASED_DILATION) < 1:
        raise ConfigError(f"VIEWS.RELEASED_DILATION: expected a fraction in [0, 1), got {v.RELEASED_DILATION}")
    if v.GEOMETRY == "released" and float(v.MIN_BOX_FRACTION) > 0:
        raise ConfigError("VIEWS.MIN_BOX_FRACTION: not part of the released geometry (VIEWS.GEOMETRY released grows "
                          f"small boxes by MIN_BOX_SIZE / 2 per side, as the released code); got {v.MIN_BOX_FRACTION}")


def _validate_copy_paste(cp: CfgNode) -> None:
    unknown = [b for b in cp.BACKGROUNDS if b not in BACKGROUNDS]
    if unknown:
        raise ConfigError(f"VIEWS.COPY_PASTE.BACKGROUNDS: expected a subset of {BACKGROUNDS} (empty: the mode's own), "
                          f"got {tuple(cp.BACKGROUNDS)}")
    if cp.MODE not in COPY_PASTE_MODES:
        raise ConfigError(f"VIEWS.COPY_PASTE.MODE: expected one of {', '.join(COPY_PASTE_MODES)}, got {cp.MODE!r}")
    if float(cp.EDGE_SIGMA) <= 0:
        raise ConfigError(f"VIEWS.COPY_PASTE.EDGE_SIGMA: a blur sigma in pixels must be positive, got {cp.EDGE_SIGMA}")
