"""The view policies: random (MoCo-v2), obj-obj, obj-obj-dilate, obj-scene (Mishra et al. 2022).

A policy is a callable `policy(image, boxes, mask=None, generator=None) -> (view1, view2)`
(docs/INTERFACES.md, "View policies"). It works in two steps that can be used apart:

* `sample_boxes(image_size, boxes, generator) -> ViewPlan`: where the two crops are (integer
  XYXY boxes inside the image), which proposal they came from, and the regions they were
  sampled in. Tests and `objcrop views show` look at this geometry directly.
* cropping with `F.resized_crop` to CROP_SIZE and MoCo-v2's augmentations per view.

An image without a usable proposal gets the random two-crop; `policy.fallbacks` counts them.
"""
import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from fvcore.common.config import CfgNode
from torchvision import tv_tensors

from objcrop.errors import ObjcropError
from objcrop.pretrain.views import geometry as geo
from objcrop.pretrain.views import released
from objcrop.pretrain.views.augment import MocoV2Augment

logger = logging.getLogger("objcrop.views")


@dataclass
class ViewPlan:
    # integer XYXY crop boxes of view 1 and view 2: inside the image, except with VIEWS.GEOMETRY
    # "released", whose regions may reach past it (read as black, as the released code's PIL crop)
    crops: Tuple[geo.IntBox, geo.IntBox]
    regions: Tuple[geo.Box, geo.Box]           # the regions each crop was sampled inside
    box_index: Optional[int] = None            # the proposal used (None: random two-crop)
    source_box: Optional[geo.Box] = None       # that proposal, clipped to the image
    grown_box: Optional[geo.Box] = None        # ... grown to the minimum box size (released: the object region)
    dilated_box: Optional[geo.Box] = None      # ... dilated (obj-obj-dilate; released: before the small-box rule)
    swapped: bool = False
    fallback: bool = False
    pasted: Tuple[bool, bool] = (False, False)  # DiLo copy-paste: which views were pasted


def as_image(image) -> torch.Tensor:
    """uint8 [3, H, W] tensor from a tensor / tv_tensors.Image / HWC numpy array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ObjcropError(f"view policy: expected an HxWx3 array, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ObjcropError(f"view policy: expected a uint8 [3, H, W] image tensor, got {getattr(image, 'shape', type(image))}")
    if image.dtype != torch.uint8:
        raise ObjcropError(f"view policy: expected a uint8 image, got {image.dtype}")
    return image.as_subclass(torch.Tensor)


def as_boxes(boxes, image_size: Tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """Proposals as XYXY BoundingBoxes clamped to the image, degenerate ones (< 1 px) dropped."""
    height, width = image_size
    if boxes is None:
        boxes = torch.zeros((0, 4), dtype=torch.float32)
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes,
                            dtype=torch.float32).reshape(-1, 4)
    # Clamped by hand: torchvision >= 0.23 gives boxes a clamping mode whose default ("soft") need
    # not clamp XYXY boxes to the canvas the way 0.18's F.clamp_bounding_boxes does.
    boxes = boxes.clone()
    boxes[:, 0::2].clamp_(0, width)
    boxes[:, 1::2].clamp_(0, height)
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return boxes[keep] if not bool(keep.all()) else boxes


class ViewPolicy:
    """Common machinery; subclasses implement `_plan_with_box`."""

    name = "base"
    uses_boxes = True

    def __init__(self, views_cfg: CfgNode):
        v = views_cfg
        self.crop_size = int(v.CROP_SIZE)
        self.scale_obj = tuple(float(s) for s in v.SCALE_OBJ)
        self.scale_dilate = tuple(float(s) for s in v.SCALE_DILATE)
        self.scale_eps = float(v.SCALE_EPS)
        self.ratio = tuple(float(r) for r in v.RATIO)
        self.dilation = tuple(float(d) for d in v.DILATION)
        self.swap_prob = float(v.SWAP_PROB)
        self.min_box_size = float(self.crop_size if int(v.MIN_BOX_SIZE) < 0 else v.MIN_BOX_SIZE)
        self.min_box_fraction = float(v.MIN_BOX_FRACTION)
        self.random_scale = tuple(float(s) for s in v.RANDOM_SCALE)
        self.geometry = str(v.get("GEOMETRY", "objcrop"))
        self.released_dilation = float(v.get("RELEASED_DILATION", 0.2))
        self.augment = MocoV2Augment(v)
        self.calls = 0
        self.fallbacks = 0

    # -- geometry -----------------------------------------------------------------------
    def sample_boxes(self, image_size: Tuple[int, int], boxes=None,
                     generator: Optional[torch.Generator] = None) -> ViewPlan:
        height, width = int(image_size[0]), int(image_size[1])
        if not self.uses_boxes:
            return self._random_plan(width, height, generator)
        boxes = as_boxes(boxes, (height, width))
        if len(boxes) == 0:
            self.fallbacks += 1
            plan = self._random_plan(width, height, generator)
            plan.fallback = True
            return plan
        index = int(torch.randint(len(boxes), (1,), generator=generator)) if len(boxes) > 1 else 0
        source = tuple(float(c) for c in boxes[index].tolist())
        if self.geometry == "released":
            plan = self._released_plan(source, width, height, generator)
        else:
            grown = geo.grow_box(source,
                                 geo.min_box_side(width, self.min_box_size, self.min_box_fraction),
                                 geo.min_box_side(height, self.min_box_size, self.min_box_fraction),
                                 width, height)
            plan = self._plan_with_box(grown, width, height, generator)
            plan.grown_box = grown
        plan.box_index, plan.source_box = index, source
        if float(torch.rand(1, generator=generator)) < self.swap_prob:
            plan.crops, plan.regions, plan.swapped = plan.crops[::-1], plan.regions[::-1], True
        return plan

    def _plan_with_box(self, box: geo.Box, width: int, height: int, generator) -> ViewPlan:
        raise NotImplementedError

    def _released_plan(self, box: geo.Box, width: int, height: int, generator) -> ViewPlan:
        """The released code's geometry (pretrain/views/released.py) for this policy."""
        raise NotImplementedError

    def _random_plan(self, width: int, height: int, generator) -> ViewPlan:
        whole = (0, 0, width, height)
        crops = tuple(geo.random_resized_crop_in(whole, self.random_scale, self.ratio, generator, self.scale_eps)
                      for _ in range(2))
        return ViewPlan(crops=crops, regions=(whole, whole))

    def _crop_in(self, region: geo.Box, scale: Sequence[float], width: int, height: int, generator) -> geo.IntBox:
        return geo.random_resized_crop_in(geo.integer_region(region, width, height), scale, self.ratio,
                                          generator, self.scale_eps)

    # -- pixels -------------------------------------------------------------------------
    def __call__(self, image, boxes=None, mask=None, generator: Optional[torch.Generator] = None):
        return self.sample(image, boxes, mask, generator)[2]

    def sample(self, image, boxes=None, mask=None, generator: Optional[torch.Generator] = None,
               render_image: bool = False):
        """(the image the views were cut from, the ViewPlan, (view1, view2)): what `views show` draws.

        render_image matters only to wrappers that change the image (copy-paste)."""
        image = as_image(image)
        self.calls += 1
        plan = self.sample_boxes(tuple(image.shape[-2:]), boxes, generator)
        views = tuple(self.augment(self.crop(image, crop), i, generator) for i, crop in enumerate(plan.crops))
        return image, plan, views

    def crop(self, image: torch.Tensor, crop: geo.IntBox) -> torch.Tensor:
        x0, y0, x1, y1 = crop
        return F.resized_crop(image, y0, x0, y1 - y0, x1 - x0, [self.crop_size, self.crop_size], antialias=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, calls={self.calls}, fallbacks={self.fallbacks})"


class RandomTwoCrop(ViewPolicy):
    """MoCo-v2's baseline: two RandomResizedCrop(RANDOM_SCALE) of the whole image."""

    name = "random"
    uses_boxes = False


class ObjObjDilate(ViewPolicy):
    """View 1: RandomResizedCrop(SCALE_OBJ) inside the proposal; view 2: RandomResizedCrop(SCALE_DILATE)
    inside the proposal dilated by d ~ U(DILATION) of the image size. Views swapped with SWAP_PROB."""

    name = "obj-obj-dilate"

    def _dilation(self, generator) -> float:
        return geo.uniform(self.dilation[0], self.dilation[1], float(torch.rand(1, generator=generator)))

    def _plan_with_box(self, box, width, height, generator):
        dilated = geo.dilate_box(box, self._dilation(generator), width, height)
        crops = (self._crop_in(box, self.scale_obj, width, height, generator),
                 self._crop_in(dilated, self.scale_dilate, width, height, generator))
        return ViewPlan(crops=crops, regions=(box, dilated), dilated_box=dilated)

    def _released_delta(self) -> float:
        return self.released_dilation

    def _released_plan(self, box, width, height, generator):
        # object view: extract_bb(dilation=0) then RandomResizedCrop(224, scale=(rescale_parameter, 1));
        # dilated view: extract_bb(dilation=delta) then RandomResizedCrop(224, scale=(0.2, 1))
        _, obj_region = released.region(box, width, height, 0.0, int(self.min_box_size))
        dilated, dil_region = released.region(box, width, height, self._released_delta(), int(self.min_box_size))
        # scale_eps 0: torchvision's RandomResizedCrop draws from (0, 1) and rejects empty crops
        crops = (geo.random_resized_crop_in(obj_region, self.scale_obj, self.ratio, generator, 0.0),
                 geo.random_resized_crop_in(dil_region, self.scale_dilate, self.ratio, generator, 0.0))
        return ViewPlan(crops=crops, regions=(obj_region, dil_region), grown_box=obj_region, dilated_box=dilated)


class ObjObj(ObjObjDilate):
    """Obj-Obj: both views inside the same (undilated) proposal."""

    name = "obj-obj"

    def _dilation(self, generator) -> float:
        return 0.0

    def _released_delta(self) -> float:
        return 0.0


class ObjScene(ViewPolicy):
    """View 1: whole-image RandomResizedCrop(RANDOM_SCALE); view 2: the proposal resized to CROP_SIZE."""

    name = "obj-scene"

    def _plan_with_box(self, box, width, height, generator):
        whole = (0, 0, width, height)
        scene = geo.random_resized_crop_in(whole, self.random_scale, self.ratio, generator, self.scale_eps)
        obj = geo.integer_region(box, width, height)
        return ViewPlan(crops=(scene, obj), regions=(whole, box))

    def _released_plan(self, box, width, height, generator):
        # openimages_dataset_bing_object_scene.py: RandomResizedCrop(224, (0.2, 1)) of the image, and
        # the small-box-ruled box resized to 224 x 224
        whole = (0, 0, width, height)
        scene = geo.random_resized_crop_in(whole, self.random_scale, self.ratio, generator, 0.0)
        _, obj = released.region(box, width, height, 0.0, int(self.min_box_size))
        return ViewPlan(crops=(scene, obj), regions=(whole, obj), grown_box=obj)


POLICY_CLASSES = {cls.name: cls for cls in (RandomTwoCrop, ObjObj, ObjObjDilate, ObjScene)}
