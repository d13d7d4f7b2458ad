"""MoCo-v2's per-view augmentations on torchvision transforms v2 functionals.

Colour jitter (p 0.8, random order of the four adjustments as torchvision's ColorJitter),
grey (p 0.2), Gaussian blur (sigma scaled to the crop size), optional solarize (BYOL),
horizontal flip, then normalisation. All random numbers come from the caller's generator.
"""
import math
from typing import Optional

import torch
import torchvision.transforms.v2.functional as F
from fvcore.common.config import CfgNode

# The size the paper's blur sigma range was chosen for (MoCo-v2's 224-px views).
REFERENCE_CROP_SIZE = 224


class MocoV2Augment:
    """`augment(crop uint8 [3,S,S], view_index, generator) -> float32 [3,S,S]` normalised."""

    def __init__(self, views_cfg: CfgNode):
        v = views_cfg
        self.jitter = tuple(float(x) for x in v.COLOR_JITTER)
        self.jitter_prob = float(v.COLOR_JITTER_PROB)
        self.grey_prob = float(v.GRAYSCALE_PROB)
        factor = float(v.CROP_SIZE) / REFERENCE_CROP_SIZE
        self.blur_sigma = (float(v.BLUR_SIGMA[0]) * factor, float(v.BLUR_SIGMA[1]) * factor)
        self.blur_prob = tuple(float(p) for p in v.BLUR_PROB)
        self.solarize_prob = tuple(float(p) for p in v.SOLARIZE_PROB)
        self.flip_prob = float(v.FLIP_PROB)
        self.mean = [float(m) for m in v.PIXEL_MEAN]
        self.std = [float(s) for s in v.PIXEL_STD]

    def __call__(self, crop: torch.Tensor, view_index: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        (u_jit, u_b, u_c, u_s, u_h, u_grey, u_blur, u_sigma, u_sol, u_flip) = torch.rand(10, generator=generator).tolist()
        x = F.to_dtype(crop, torch.float32, scale=True)
        if u_jit < self.jitter_prob:
            order = torch.randperm(4, generator=generator).tolist()
            x = self._color_jitter(x, order, (u_b, u_c, u_s, u_h))
        if u_grey < self.grey_prob:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        if u_blur < self.blur_prob[view_index]:
            x = self._blur(x, self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u_sigma)
        if u_sol < self.solarize_prob[view_index]:
            x = F.solarize(x, 0.5)
        if u_flip < self.flip_prob:
            x = F.horizontal_flip(x)
        return F.normalize(x, self.mean, self.std)

    def _color_jitter(self, x: torch.Tensor, order, uniforms) -> torch.Tensor:
        b, c, s, h = self.jitter
        u_b, u_c, u_s, u_h = uniforms
        for op in order:
            if op == 0 and b > 0:
                x = F.adjust_brightness(x, max(0.0, 1 - b) + 2 * b * u_b)
            elif op == 1 and c > 0:
                x = F.adjust_contrast(x, max(0.0, 1 - c) + 2 * c * u_c)
            elif op == 2 and s > 0:
                x = F.adjust_saturation(x, max(0.0, 1 - s) + 2 * s * u_s)
            elif op == 3 and h > 0:
                x = F.adjust_hue(x, -h + 2 * h * u_h)
        return x

    @staticmethod
    def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
        # PIL's GaussianBlur (MoCo-v2's) truncates near 3 sigma; an odd kernel no larger than the view.
        return gaussian_blur(x, sigma)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's `F.gaussian_blur` (same kernel, reflect padding), as two 1-D passes.

    torchvision convolves with the full k x k kernel; a 13-tap blur of a 224-px view then costs
    169 multiply-adds per pixel instead of 26 and dominated the per-sample time of the views.
    x: float [C, H, W]; the kernel covers +-3 sigma and is capped below the image size.
    """
    height, width = x.shape[-2:]
    if min(height, width) < 3 or sigma <= 0:
        return x
    k = 2 * int(math.ceil(3 * sigma)) + 1
    k = max(3, min(k, (min(height, width) // 2) * 2 - 1))
    half = (k - 1) * 0.5
    t = torch.linspace(-half, half, steps=k, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[0]
    y = torch.nn.functional.pad(x[None], [k // 2, k // 2, k // 2, k // 2], mode="reflect")
    y = torch.nn.functional.conv2d(y, kernel.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)
    y = torch.nn.functional.conv2d(y, kernel.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)
    return y[0]
