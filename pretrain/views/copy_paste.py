"""DiLo copy-paste ("Distilling Localization for Self-Supervised Representation Learning").

Before cropping, with probability PROB, the salient foreground (a saliency mask from the
proposal store, or the union of ground-truth masks) is pasted onto another background:
a grey of random intensity, another image of the dataset, or a generated texture. The mask
edge is softened with a Gaussian blur with probability BLUR_PROB (the released code's
settings: p = 0.3, blur p = 0.5). The foreground stays where it was, so the proposal boxes
still hold and the wrapper composes with any crop policy.
"""
import logging
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F

from objcrop.errors import ObjcropError
from objcrop.pretrain.views.policies import as_image

logger = logging.getLogger("objcrop.views")


class CopyPaste:
    """Wrap a view policy: `CopyPaste(policy, ...)(image, boxes, mask, generator)`."""

    def __init__(self, policy, prob: float = 0.3, blur_prob: float = 0.5,
                 backgrounds: Sequence[str] = ("grey", "image", "texture"),
                 background_fn: Optional[Callable[[Optional[torch.Generator]], torch.Tensor]] = None):
        self.policy = policy
        self.prob = float(prob)
        self.blur_prob = float(blur_prob)
        kinds = list(backgrounds)
        if "image" in kinds and background_fn is None:
            logger.info("copy-paste: no dataset image source given; using %s backgrounds only",
                        "/".join(k for k in kinds if k != "image") or "grey")
            kinds = [k for k in kinds if k != "image"] or ["grey"]
        self.backgrounds = kinds
        self.background_fn = background_fn
        self.pasted = 0
        self.missing_masks = 0

    @property
    def name(self) -> str:
        return f"{self.policy.name}+copy-paste"

    @property
    def fallbacks(self) -> int:
        return self.policy.fallbacks

    @property
    def calls(self) -> int:
        return self.policy.calls

    @property
    def augment(self):
        return self.policy.augment

    def sample_boxes(self, image_size, boxes=None, generator=None):
        return self.policy.sample_boxes(image_size, boxes, generator)

    def crop(self, image, crop):
        return self.policy.crop(image, crop)

    def __call__(self, image, boxes=None, mask=None, generator: Optional[torch.Generator] = None):
        return self.sample(image, boxes, mask, generator)[2]

    def sample(self, image, boxes=None, mask=None, generator: Optional[torch.Generator] = None):
        """(the possibly pasted image, the ViewPlan, (view1, view2))."""
        image = as_image(image)
        if float(torch.rand(1, generator=generator)) < self.prob:
            if mask is None or not bool(torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).any()):
                self.missing_masks += 1
            else:
                image = self.paste(image, mask, generator)
                self.pasted += 1
        return self.policy.sample(image, boxes, mask, generator)

    def paste(self, image: torch.Tensor, mask, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The foreground of `image` (where mask > 0) over a sampled background, uint8 [3, H, W]."""
        height, width = image.shape[-2:]
        alpha = _as_mask(mask, (height, width))
        u_blur, u_sigma = torch.rand(2, generator=generator).tolist()
        if u_blur < self.blur_prob:
            alpha = _soften(alpha, sigma=(1.0 + 2.0 * u_sigma) * max(height, width) / 224.0)
        background = self.background(height, width, generator)
        out = alpha * image.float() + (1.0 - alpha) * background.float()
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def background(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        kind = self.backgrounds[int(torch.randint(len(self.backgrounds), (1,), generator=generator))]
        if kind == "grey":
            level = int(torch.randint(256, (1,), generator=generator))
            return torch.full((3, height, width), level, dtype=torch.uint8)
        if kind == "image":
            other = as_image(self.background_fn(generator))
            return F.resize(other, [height, width], antialias=True)
        return generate_texture(height, width, generator)


def _as_mask(mask, size) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if mask.ndim != 2:
        raise ObjcropError(f"copy-paste: expected an [H, W] mask, got shape {tuple(mask.shape)}")
    alpha = (mask > 0).float()[None]
    if tuple(alpha.shape[-2:]) != tuple(size):
        alpha = nnf.interpolate(alpha[None], size=tuple(size), mode="nearest")[0]
    return alpha


def _soften(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * int(math.ceil(3 * sigma)) + 1
    k = max(3, min(k, (min(alpha.shape[-2:]) // 2) * 2 - 1))
    return F.gaussian_blur(alpha, [k, k], [sigma, sigma])


def generate_texture(height: int, width: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random texture, uint8 [3, H, W]: smooth colour noise modulated by oriented stripes.

    Cheap (a small random grid upsampled, one sine) and varied enough that the network cannot
    learn "texture = background" from a single pattern.
    """
    u = torch.rand(5, generator=generator).tolist()
    cells = 2 + int(u[0] * 7)
    grid = torch.rand(1, 3, cells, cells, generator=generator)
    colour = nnf.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0].clamp_(0, 1)
    angle, period = u[1] * math.pi, 4.0 + u[2] * 28.0 * max(height, width) / 224.0
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    stripes = torch.sin((xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period) + u[3] * 2 * math.pi)
    contrast = 0.15 + 0.35 * u[4]
    texture = colour * (1.0 - contrast + contrast * stripes)[None]
    return (texture * 255).round_().clamp_(0, 255).to(torch.uint8)
