"""MoCo-v2's per-view augmentations: torchvision transforms v2's arithmetic (its functionals where
they are cheap; objcrop's own colour operations and blur, held to torchvision's in the tests).

Colour jitter (p 0.8, random order of the four adjustments as torchvision's ColorJitter),
grey (p 0.2), Gaussian blur (sigma scaled to the crop size), optional solarize (BYOL),
horizontal flip, then normalisation. All random numbers come from the caller's generator.

Two ways to run them, with the same random draws: per view in the loader's workers
(`augment(crop, view_index, generator)`, the default), or batched on the training device
(VIEWS.AUGMENT_ON "device"): the worker only draws each view's parameters (`draw`) and ships the
uint8 crop with them (`DeferredAugment`); the trainer applies `apply_batch` to the whole batch.
The photometric work is most of a view's cost, so on a GPU machine the CPU stops being the limit.
Both ways compute the same floats (tests/test_views_augment.py).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torchvision.transforms.v2.functional as F
from fvcore.common.config import CfgNode

# The size the paper's blur sigma range was chosen for (MoCo-v2's 224-px views).
REFERENCE_CROP_SIZE = 224
# Colour-jitter operations, in the index torchvision's ColorJitter permutes.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass
class ViewParams:
    """One view's augmentation, drawn: what `__call__` applies and `apply_batch` applies batched."""

    jitter: bool
    factors: Tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    order: Tuple[int, int, int, int]            # the jitter operations' order
    grey: bool
    sigma: float                                # blur sigma; 0 = no blur
    solarize: bool
    flip: bool

    def as_tensor(self) -> torch.Tensor:
        """Float [13]: jitter, 4 factors, 4 order indices, grey, sigma, solarize, flip."""
        # the fields by name: dataclasses.astuple deep-copies them, a sixth of a deferring worker's time
        return torch.tensor([float(self.jitter), *self.factors, *self.order, float(self.grey), self.sigma,
                             float(self.solarize), float(self.flip)], dtype=torch.float64)


class MocoV2Augment:
    """`augment(crop uint8 [3,S,S], view_index, generator) -> float32 [3,S,S]` normalised."""

    def __init__(self, views_cfg: CfgNode):
        v = views_cfg
        # The per-view colour operations are the batched path's own, on a batch of one, so that the two
        # paths compute the same floats (a training step amplifies any difference). They are torchvision's
        # arithmetic (tests/test_views_augment.py holds them to its functionals) without its set-up cost:
        # its adjust_hue and per-image depthwise blur were most of a 64-px view's time in a CPU profile of
        # the loader's worker; bench_augment.py times both.
        self.adjust = tuple(_on_one_image(_ADJUST_BATCH[op]) for op in range(4))
        self.blur = gaussian_blur
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
        self._mean_std = {}  # device -> (mean, std) [1,3,1,1]: made once, not copied to the GPU every batch

    def draw(self, view_index: int, generator: Optional[torch.Generator] = None) -> ViewParams:
        """This view's random parameters, taken from `generator` in a fixed order."""
        (u_jit, u_b, u_c, u_s, u_h, u_grey, u_blur, u_sigma, u_sol, u_flip) = torch.rand(10, generator=generator).tolist()
        jitter = u_jit < self.jitter_prob
        order = tuple(torch.randperm(4, generator=generator).tolist()) if jitter else (0, 1, 2, 3)
        b, c, s, h = self.jitter
        factors = (max(0.0, 1 - b) + 2 * b * u_b, max(0.0, 1 - c) + 2 * c * u_c,
                   max(0.0, 1 - s) + 2 * s * u_s, -h + 2 * h * u_h)
        blur = u_blur < self.blur_prob[view_index]
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u_sigma if blur else 0.0
        return ViewParams(jitter, factors, order, u_grey < self.grey_prob, sigma,
                          u_sol < self.solarize_prob[view_index], u_flip < self.flip_prob)

    def __call__(self, crop: torch.Tensor, view_index: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        p = self.draw(view_index, generator)
        x = crop.float().div_(255.0)  # as apply_batch scales (F.to_dtype multiplies by 1/255: other roundings)
        if p.jitter:
            x = self._color_jitter(x, p.order, p.factors)
        if p.grey:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        if p.sigma > 0:
            # PIL's GaussianBlur (MoCo-v2's) truncates near 3 sigma; an odd kernel no larger than the view.
            x = self.blur(x, p.sigma)
        if p.solarize:
            x = F.solarize(x, 0.5)
        if p.flip:
            x = F.horizontal_flip(x)
        return F.normalize(x, self.mean, self.std)

    def _color_jitter(self, x: torch.Tensor, order, factors) -> torch.Tensor:
        for op in order:
            if self.jitter[op] > 0:  # a zero strength is no adjustment at all (ColorJitter's None)
                x = self.adjust[op](x, factors[op])
        return x

    # -- batched, on any device -------------------------------------------------------------
    def apply_batch(self, crops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """`__call__` for a batch: uint8 crops [B,3,S,S] and their `ViewParams.as_tensor()` rows [B,13]
        -> float32 [B,3,S,S] normalised, on the crops' device. Equal to the per-view path up to float
        rounding (tests/test_views_augment.py). Every operation runs on the whole batch and a mask keeps
        it where drawn: indexing by the draws would wait for the GPU at each of them."""
        x = crops.float().div_(255.0)
        p = params.to(device=x.device, dtype=torch.float32)
        jitter = p[:, 0] > 0.5
        for step in range(4):
            op_at_step = p[:, 5 + step].round().long()
            for op in range(4):
                if self.jitter[op] > 0:  # zero strength: never applied, as in `__call__`
                    x = torch.where(_per_sample(jitter & (op_at_step == op)), _ADJUST_BATCH[op](x, p[:, 1 + op]), x)
        x = torch.where(_per_sample(p[:, 9] > 0.5), F.rgb_to_grayscale(x, num_output_channels=3), x)
        sigma = p[:, 10]
        if max(self.blur_prob) > 0 and self.blur_sigma[1] > 0:
            # the unblurred images get any valid sigma: their result is not kept
            blurred = gaussian_blur_batch(x, torch.where(sigma > 0, sigma, torch.full_like(sigma, self.blur_sigma[1])),
                                          max_sigma=self.blur_sigma[1])
            x = torch.where(_per_sample(sigma > 0), blurred, x)
        x = torch.where(_per_sample(p[:, 11] > 0.5) & (x >= 0.5), 1.0 - x, x)
        x = torch.where(_per_sample(p[:, 12] > 0.5), x.flip(-1), x)
        if x.device not in self._mean_std:
            self._mean_std[x.device] = tuple(torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.mean, self.std))
        mean, std = self._mean_std[x.device]
        return x.sub_(mean).div_(std)


class DeferredAugment:
    """Stands in for a policy's `augment` in the loader's workers when the device augments:
    returns (the uint8 crop, its drawn parameters [13]) and leaves the pixels alone."""

    def __init__(self, augment: MocoV2Augment):
        self.augment = augment

    def __call__(self, crop: torch.Tensor, view_index: int, generator: Optional[torch.Generator] = None):
        return crop, self.augment.draw(view_index, generator).as_tensor()


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """[B] -> [B,1,1,1]: one factor or flag per image, broadcast over its pixels."""
    return values.view(-1, 1, 1, 1)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor)).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = F.rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    f = _per_sample(factor)
    return (x * f + (1.0 - f) * mean).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _per_sample(factor)
    return (x * f + (1.0 - f) * F.rgb_to_grayscale(x)).clamp_(0.0, 1.0)


def _hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (a hue shift in HSV) with one factor per image."""
    r, g, b = x.unbind(dim=1)
    # elementwise over the three planes: a max/min reduction across the channel dim was ~60 us each
    # on one 64-px image on the CPU, more than the rest of the hue shift
    value = torch.maximum(torch.maximum(r, g), b)
    delta = value - torch.minimum(torch.minimum(r, g), b)
    grey = delta == 0  # no hue: H and S are 0 there, as in PIL / torchvision
    safe = torch.where(grey, torch.ones_like(delta), delta)
    sector = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = (torch.where(grey, torch.zeros_like(sector), sector) / 6.0 + factor.view(-1, 1, 1)).remainder(1.0)
    saturation = torch.where(grey, torch.zeros_like(delta), delta / torch.where(value == 0, torch.ones_like(value), value))
    # HSV -> RGB: channel n (5, 3, 1 for R, G, B) is V - V S clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6
    k = torch.stack([(n + 6.0 * hue).remainder_(6.0) for n in (5.0, 3.0, 1.0)], dim=1)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return (value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)).clamp_(0.0, 1.0)


_ADJUST_BATCH = {BRIGHTNESS: _brightness, CONTRAST: _contrast, SATURATION: _saturation, HUE: _hue}


def _on_one_image(batch_op):
    """A batched colour operation (x [B,3,H,W], factors [B]) as a per-image one (x [3,H,W], factor)."""
    def op(x: torch.Tensor, factor: float) -> torch.Tensor:
        return batch_op(x[None], torch.tensor([factor], dtype=x.dtype))[0]
    return op


adjust_hue = _on_one_image(_hue)  # torchvision's adjust_hue for one float RGB image [3,H,W]


def _kernel_size(sigma: float, height: int, width: int) -> int:
    """An odd kernel covering +-3 sigma, capped below the image size (reflect padding needs it)."""
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return max(3, min(k, (min(height, width) // 2) * 2 - 1))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's `F.gaussian_blur` (same kernel, reflect padding), as two 1-D passes.

    torchvision convolves with the full k x k kernel; a 13-tap blur of a 224-px view then costs
    169 multiply-adds per pixel instead of 26 and dominated the per-sample time of the views.
    x: float [C, H, W]; the kernel covers +-3 sigma and is capped below the image size.
    """
    height, width = x.shape[-2:]
    if min(height, width) < 3 or sigma <= 0:
        return x
    k = _kernel_size(sigma, height, width)
    half = (k - 1) * 0.5
    t = torch.linspace(-half, half, steps=k, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = torch.nn.functional.pad(x[None], [k // 2, k // 2, k // 2, k // 2], mode="reflect")[0]
    if k > _SHIFTED_TAPS_MAX:
        channels = x.shape[0]
        y = torch.nn.functional.conv2d(y[None], kernel.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)
        return torch.nn.functional.conv2d(y, kernel.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)[0]
    # Few taps (every blur of a 64-px study view has 3 or 5): shifted multiply-adds. A depthwise
    # convolution of one small image cost ~0.2 ms per pass in the loader's worker, most of it set-up.
    w = kernel.tolist()
    y = _shifted_sum(y, w, width, dim=-1)
    return _shifted_sum(y, w, height, dim=-2)


# Up to this many taps gaussian_blur sums shifted copies; wider kernels (large sigmas) convolve.
_SHIFTED_TAPS_MAX = 15


def _shifted_sum(y: torch.Tensor, weights, length: int, dim: int) -> torch.Tensor:
    """sum_j weights[j] * y[..., j:j + length] along `dim` (a 1-D correlation, no padding), summed as
    gaussian_blur_batch sums: a product, then an add, per tap (an add with alpha may fuse them)."""
    return sum(weights[j] * y.narrow(dim, j, length) for j in range(len(weights)))


def gaussian_blur_batch(x: torch.Tensor, sigmas: torch.Tensor, max_sigma: Optional[float] = None) -> torch.Tensor:
    """`gaussian_blur` with one sigma per image: float [B,C,H,W], sigmas [B] (all > 0, at most max_sigma).

    Every image's kernel sits zero-padded in the one `max_sigma` needs (default: the largest sigma,
    which reads it back from the device), so one pass blurs the batch; the zero taps make the wider
    reflect padding invisible."""
    batch, _, height, width = x.shape
    if min(height, width) < 3:
        return x
    k = _kernel_size(float(sigmas.max()) if max_sigma is None else max_sigma, height, width)
    cap = (min(height, width) // 2) - 1  # the largest half-width _kernel_size allows
    t = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    sigmas = sigmas.to(x.dtype).view(-1, 1)
    reach = torch.ceil(3 * sigmas).clamp(1, cap)  # each image's own half-width
    kernel = torch.exp(-0.5 * (t.view(1, -1) / sigmas) ** 2) * (t.abs().view(1, -1) <= reach)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, k]
    kernel = kernel.view(batch, 1, 1, 1, k)
    # Shifted multiply-adds rather than a convolution: on a GPU cuDNN may convolve in TF32 (about
    # three significant digits), and the blur should match the workers' float32 one.
    y = torch.nn.functional.pad(x, [k // 2] * 4, mode="reflect")
    y = sum(kernel[..., j] * y[..., j:j + width] for j in range(k))       # along the rows
    return sum(kernel[..., j] * y[..., j:j + height, :] for j in range(k))  # then the columns
