"""DiLo copy-paste ("Distilling Localization for Self-Supervised Representation Learning").

Before the augmentations, the salient foreground (a saliency map or mask from the proposal store,
or the union of ground-truth masks) is pasted onto another background: a grey of random
intensity, another image of the dataset, or a generated texture. The foreground stays where it
was, so the proposal boxes still hold and the wrapper composes with any crop policy. Two modes
(VIEWS.COPY_PASTE.MODE):

* "dilo", the reference: DiLo's released `saliency_dataset.py` (`composite_background`, called
  once per view). Each view draws its own paste with p PROB (0.3), its own background (default a
  grey of level floor(u * 255), as DiLo) and its own edge blur (p BLUR_PROB 0.5, a Gaussian of
  sigma EDGE_SIGMA = 5 image pixels, DiLo's `ImageFilter.GaussianBlur(5)`, here an exact Gaussian
  rather than PIL's box approximation). The alpha is the continuous saliency map (a float mask
  in [0, 1]; a uint8/bool mask is a binary one). So the two views of a pair cannot be matched by
  their background: the invariance DiLo is after.
* "shared", the variant the study's copy-paste rows measured: one draw per pair, so both views
  show the same pasted image on the same background; the edge sigma is drawn, 1-3 px per 224 px.

Compositing happens in view space: the crop boxes are sampled first (they depend only on the
image size and the boxes), then image, alpha and background are each cut to the crop and resized
to the view size and blended there: the pasted image seen through each crop, at a cost that does
not grow with the image size. Backgrounds are defined over the whole image (the texture
analytically, another image stretched to the image). A crop reaching past the image (the released
geometry) sees black there, as the released code's PIL crop of the pasted image would.
"""
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from objcrop.errors import ObjcropError
from objcrop.pretrain.views.augment import gaussian_blur
from objcrop.pretrain.views.policies import as_image

logger = logging.getLogger("objcrop.views")


@dataclass
class Background:
    kind: str
    level: int = 0                              # grey
    image: Optional[torch.Tensor] = None        # image: uint8 [3, h, w], stretched over the whole image
    colour_grid: Optional[torch.Tensor] = None  # texture: [1, 3, c, c] smooth colour noise
    angle: float = 0.0                          # texture: stripe orientation (radians)
    period: float = 8.0                         # texture: stripe period in image pixels
    phase: float = 0.0
    contrast: float = 0.3


class CopyPaste:
    """Wrap a view policy: `CopyPaste(policy, ...)(image, boxes, mask, generator)`."""

    def __init__(self, policy, prob: float = 0.3, blur_prob: float = 0.5,
                 backgrounds: Sequence[str] = ("grey", "image", "texture"),
                 background_fn: Optional[Callable[[Optional[torch.Generator]], torch.Tensor]] = None,
                 mode: str = "shared", edge_sigma: float = 5.0):
        if mode not in ("dilo", "shared"):
            raise ObjcropError(f"copy-paste: unknown mode {mode!r} (dilo or shared)")
        self.policy = policy
        self.mode = mode
        self.prob = float(prob)
        self.blur_prob = float(blur_prob)
        self.edge_sigma = float(edge_sigma)
        # DiLo's grey: floor(random() * 255), levels 0..254; the shared variant drew 0..255.
        self.grey_levels = 255 if mode == "dilo" else 256
        kinds = list(backgrounds)
        if "image" in kinds and background_fn is None:
            logger.info("copy-paste: no dataset image source given; using %s backgrounds only",
                        "/".join(k for k in kinds if k != "image") or "grey")
            kinds = [k for k in kinds if k != "image"] or ["grey"]
        self.backgrounds = kinds
        self.background_fn = background_fn
        self.pasted = 0               # pairs with a pasted view
        self.pasted_views = [0, 0]    # pasted views, per view index
        self.missing_masks = 0

    # -- the policy interface, delegated ----------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.policy.name}+copy-paste" + ("" if self.mode == "shared" else f"-{self.mode}")

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

    def sample(self, image, boxes=None, mask=None, generator: Optional[torch.Generator] = None,
               render_image: bool = False):
        """(the image the views show, the ViewPlan, (view1, view2)).

        When the foreground was pasted, the whole pasted image is rendered only with
        render_image=True (for `views show`); otherwise None stands in its place.
        """
        image = as_image(image)
        if self.mode == "dilo":
            return self._sample_per_view(image, boxes, mask, generator)
        paste = float(torch.rand(1, generator=generator)) < self.prob
        if paste and (mask is None or not bool(_as_tensor(mask).any())):
            self.missing_masks += 1
            paste = False
        if not paste:
            return self.policy.sample(image, boxes, mask, generator, render_image)
        self.pasted += 1
        self.policy.calls += 1
        height, width = image.shape[-2:]
        alpha_full = _alpha(mask, (height, width))
        soft_sigma = self._edge_sigma(height, width, generator)
        background = self.sample_background(height, width, generator)
        plan = self.policy.sample_boxes((height, width), boxes, generator)
        plan.pasted = (True, True)
        self.pasted_views = [n + 1 for n in self.pasted_views]
        size = self.policy.crop_size
        views = []
        for i, crop in enumerate(plan.crops):
            pasted = composite(image, alpha_full, background, crop, (size, size), soft_sigma)
            views.append(self.policy.augment(pasted, i, generator))
        shown = None
        if render_image:
            shown = composite(image, alpha_full, background, (0, 0, width, height), (height, width), soft_sigma)
        return shown, plan, tuple(views)

    def _sample_per_view(self, image: torch.Tensor, boxes, mask, generator):
        """DiLo: each view its own paste draw, background and edge blur (`composite_background` per view).

        Returns (the unpasted image, on which `views show` draws the crops; the plan, with
        `plan.pasted` per view; the two views)."""
        height, width = image.shape[-2:]
        self.policy.calls += 1
        plan = self.policy.sample_boxes((height, width), boxes, generator)
        size = self.policy.crop_size
        has_mask = mask is not None and bool(_as_tensor(mask).any())
        alphas = {}  # sigma -> the alpha blurred by it (None: as given), each made once per sample

        def alpha(sigma):
            if None not in alphas:
                alphas[None] = _alpha(mask, (height, width))
            if sigma not in alphas:
                alphas[sigma] = blurred_alpha(alphas[None], sigma)
            return alphas[sigma]

        views, pasted = [], []
        for i, crop in enumerate(plan.crops):
            paste = float(torch.rand(1, generator=generator)) < self.prob
            if paste and not has_mask:
                self.missing_masks += 1
                paste = False
            if paste:
                sigma = self._edge_sigma(height, width, generator)
                background = self.sample_background(height, width, generator)
                view = composite(image, alpha(sigma), background, crop, (size, size), None)
                self.pasted_views[i] += 1
            else:
                view = self.policy.crop(image, crop)
            pasted.append(paste)
            views.append(self.policy.augment(view, i, generator))
        self.pasted += any(pasted)
        plan.pasted = tuple(pasted)
        return image, plan, tuple(views)

    # -- pasting ----------------------------------------------------------------------------
    def paste(self, image, mask, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The whole image with its foreground pasted on a sampled background, uint8 [3, H, W]."""
        image = as_image(image)
        height, width = image.shape[-2:]
        alpha = _alpha(mask, (height, width))
        sigma = self._edge_sigma(height, width, generator)
        background = self.sample_background(height, width, generator)
        if self.mode == "dilo" and sigma is not None:
            alpha, sigma = blurred_alpha(alpha, sigma), None
        return composite(image, alpha, background, (0, 0, width, height), (height, width), sigma)

    def _edge_sigma(self, height: int, width: int, generator) -> Optional[float]:
        """Blur sigma of the mask edge in image pixels, or None for a hard edge: EDGE_SIGMA ("dilo"),
        or drawn, 1-3 px per 224 px of the image ("shared")."""
        u_blur, u_sigma = torch.rand(2, generator=generator).tolist()
        if u_blur >= self.blur_prob:
            return None
        if self.mode == "dilo":
            return self.edge_sigma
        return (1.0 + 2.0 * u_sigma) * max(height, width) / 224.0

    def sample_background(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> Background:
        kind = self.backgrounds[int(torch.randint(len(self.backgrounds), (1,), generator=generator))]
        if kind == "grey":
            return Background("grey", level=int(torch.randint(self.grey_levels, (1,), generator=generator)))
        if kind == "image":
            # Stretched to this image once, so that every crop of it cuts the same background.
            other = as_image(self.background_fn(generator))
            return Background("image", image=F.resize(other, [height, width], antialias=True))
        u = torch.rand(5, generator=generator).tolist()
        cells = 2 + int(u[0] * 7)
        return Background("texture", colour_grid=torch.rand(1, 3, cells, cells, generator=generator),
                          angle=u[1] * math.pi, period=4.0 + u[2] * 28.0 * max(height, width) / 224.0,
                          phase=u[3] * 2 * math.pi, contrast=0.15 + 0.35 * u[4])


def _as_tensor(mask) -> torch.Tensor:
    return mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))


def _alpha(mask, size: Tuple[int, int]) -> torch.Tensor:
    """The alpha as uint8 0..255 [1, H, W] at the image size (cut and resized per view later).

    A floating-point mask is a continuous alpha in [0, 1] (a saliency map, resized bilinearly);
    an integer or bool mask is binary (foreground where > 0, resized to the nearest pixel)."""
    mask = _as_tensor(mask)
    if mask.ndim != 2:
        raise ObjcropError(f"copy-paste: expected an [H, W] mask, got shape {tuple(mask.shape)}")
    if mask.is_floating_point():
        alpha = (mask.float().clamp(0, 1) * 255).round_().to(torch.uint8)[None]
        interpolation = F.InterpolationMode.BILINEAR
    else:
        alpha = ((mask > 0).to(torch.uint8) * 255)[None]
        interpolation = F.InterpolationMode.NEAREST
    if tuple(alpha.shape[-2:]) != tuple(size):
        alpha = F.resize(alpha, list(size), interpolation=interpolation, antialias=False)
    return alpha


def blurred_alpha(alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 [1, H, W] alpha blurred over the whole image by a Gaussian of `sigma` pixels (DiLo blurs
    the saliency map before compositing, so a view's edge sees the image beyond its crop)."""
    return gaussian_blur(alpha.float(), sigma).round_().clamp_(0, 255).to(torch.uint8)


def composite(image: torch.Tensor, alpha: torch.Tensor, background: Background, crop: Tuple[int, int, int, int],
              out_size: Tuple[int, int], edge_sigma: Optional[float]) -> torch.Tensor:
    """The pasted image seen through `crop` (integer XYXY), resized to out_size: uint8 [3, h, w]."""
    fg = _resized_crop(image, crop, out_size).float()
    a = _crop_alpha(alpha, crop, out_size, edge_sigma)
    bg = render_background(background, crop, out_size, image.shape[-2:])
    out = a * fg + (1.0 - a) * bg
    height, width = image.shape[-2:]
    if crop[0] < 0 or crop[1] < 0 or crop[2] > width or crop[3] > height:
        # Past the image the released geometry's crop is black padding, background included.
        inside = _resized_crop(torch.ones((1, height, width)), crop, out_size)
        out = out * inside
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _crop_alpha(alpha: torch.Tensor, crop, out_size, edge_sigma: Optional[float]) -> torch.Tensor:
    """Mask over the crop, float [1, h, w] in [0, 1], its edge blurred by edge_sigma image pixels.

    The blur runs on a copy just fine enough that sigma is at most 2 of its pixels, then that
    smooth mask is resized to the view: a wide blur (a big image, or a small crop blown up to
    the view) then costs a 13-tap kernel, not one as wide as the view.
    """
    x0, y0, x1, y1 = crop
    h, w = out_size
    if edge_sigma is None:
        return _resized_crop(alpha, crop, out_size).float() / 255.0
    crop_w, crop_h = x1 - x0, y1 - y0
    work_w = max(3, min(w, crop_w, int(2.0 * crop_w / edge_sigma)))
    work_h = max(3, min(h, crop_h, int(round(work_w * crop_h / crop_w))))
    a = _resized_crop(alpha, crop, (work_h, work_w)).float() / 255.0
    a = _gaussian(a, edge_sigma * work_w / crop_w)
    return a if (work_h, work_w) == (h, w) else F.resize(a, [h, w], antialias=False)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(x, sigma)


def _resized_crop(x: torch.Tensor, crop, out_size) -> torch.Tensor:
    x0, y0, x1, y1 = crop
    if (y1 - y0, x1 - x0) == tuple(out_size) and (x0, y0) == (0, 0) and tuple(x.shape[-2:]) == tuple(out_size):
        return x
    return F.resized_crop(x, y0, x0, y1 - y0, x1 - x0, list(out_size), antialias=True)


def render_background(bg: Background, crop, out_size, image_size) -> torch.Tensor:
    """The background over `crop` of an image of `image_size`, float [3, h, w] in 0..255."""
    h, w = out_size
    height, width = image_size
    x0, y0, x1, y1 = crop
    if bg.kind == "grey":
        return torch.full((3, h, w), float(bg.level))
    if bg.kind == "image":
        return _resized_crop(bg.image, crop, out_size).float()
    # texture: smooth colour noise x oriented stripes, evaluated at the output pixels' image coordinates
    xs = x0 + (torch.arange(w, dtype=torch.float32) + 0.5) * (x1 - x0) / w
    ys = y0 + (torch.arange(h, dtype=torch.float32) + 0.5) * (y1 - y0) / h
    cells = bg.colour_grid.shape[-1]
    colour = torch.einsum("yc,kcd,xd->kyx", _smooth_weights(ys / height, cells), bg.colour_grid[0],
                          _smooth_weights(xs / width, cells))
    phase = (xs[None, :] * math.cos(bg.angle) + ys[:, None] * math.sin(bg.angle)) * (2 * math.pi / bg.period) + bg.phase
    texture = colour.clamp_(0, 1) * (1.0 - bg.contrast + bg.contrast * torch.sin(phase))[None]
    return texture * 255.0


def _smooth_weights(u: torch.Tensor, cells: int) -> torch.Tensor:
    """[len(u), cells] interpolation weights of positions u in [0, 1] between cell centres, with a
    smoothstep blend (C1-smooth, unlike bilinear). Separable, so a texture costs two tiny matmuls
    where grid_sample's bicubic mode took a third of a pasted sample's time."""
    pos = (u * cells - 0.5).clamp(0, cells - 1)
    lo = pos.floor().long().clamp(max=cells - 1)
    hi = (lo + 1).clamp(max=cells - 1)
    frac = pos - lo.float()
    frac = frac * frac * (3 - 2 * frac)
    w = torch.zeros(len(u), cells)
    w.scatter_add_(1, lo[:, None], (1 - frac)[:, None])
    w.scatter_add_(1, hi[:, None], frac[:, None])
    return w


def generate_texture(height: int, width: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A whole random texture, uint8 [3, H, W] (what the "texture" background looks like)."""
    bg = CopyPaste(None, backgrounds=("texture",)).sample_background(height, width, generator)
    out = render_background(bg, (0, 0, width, height), (height, width), (height, width))
    return out.round_().clamp_(0, 255).to(torch.uint8)
