"""The `VIEWS` config node: every knob of the view policies, with the papers' defaults.

Call `add_views_config(cfg)` on a pretraining config before merging YAML files,
detectron2's `add_<project>_config` idiom. Defaults follow Mishra et al. (TMLR 2022,
"Object-aware Cropping for Self-Supervised Learning"), MoCo-v2's augmentations and,
for copy-paste, DiLo's released code.
"""
from fvcore.common.config import CfgNode

POLICIES = ("random", "obj-obj", "obj-obj-dilate", "obj-scene")
BACKGROUNDS = ("grey", "image", "texture")
# VIEWS.COPY_PASTE.MODE: "dilo" (DiLo's released code: a draw per view) or "shared" (one draw per
# pair, the variant the study measured); the backgrounds each mode uses when BACKGROUNDS is empty.
COPY_PASTE_MODES = ("dilo", "shared")
MODE_BACKGROUNDS = {"dilo": ("grey",), "shared": BACKGROUNDS}
# VIEWS.GEOMETRY: where the object-aware crops come from (see pretrain/views/released.py).
GEOMETRIES = ("objcrop", "released")
AUGMENT_ON = ("worker", "device")

# torchvision's ImageNet statistics: the pretrained backbone and detectron2's MoCo
# configs (RGB input, torchvision mean/std) expect exactly these.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def add_views_config(cfg: CfgNode) -> CfgNode:
    """Add `cfg.VIEWS` (in place) and return cfg."""
    v = CfgNode()
    # "random" (MoCo-v2 two-crop), "obj-obj", "obj-obj-dilate" (the paper's headline), "obj-scene".
    v.POLICY = "random"
    # Side of both square views, in pixels.
    v.CROP_SIZE = 224
    # RandomResizedCrop area range of view 1 inside the proposal box. The paper uses (0, 1);
    # a zero area is not a crop, so the lower bound is raised to SCALE_EPS when sampling.
    v.SCALE_OBJ = (0.0, 1.0)
    # RandomResizedCrop area range of view 2 inside the (dilated) proposal box.
    v.SCALE_DILATE = (0.2, 1.0)
    # Smallest area fraction actually sampled when a scale range starts at 0.
    v.SCALE_EPS = 0.01
    # RandomResizedCrop aspect-ratio range (w/h), sampled log-uniformly, for every crop.
    v.RATIO = (3.0 / 4.0, 4.0 / 3.0)
    # obj-obj-dilate: each side of the box moves out by d * image size, d ~ U(DILATION), then clipped.
    v.DILATION = (0.1, 0.2)
    # Probability of swapping view 1 and view 2 (object-aware policies).
    v.SWAP_PROB = 0.5
    # Boxes smaller than this (pixels, per side) are grown to it before cropping. -1 = CROP_SIZE
    # (the paper's rule: "boxes smaller than the crop size are grown to it"); 0 = off.
    v.MIN_BOX_SIZE = -1
    # Minimum box side as a fraction of the image side; 0 = off. When set, the effective
    # minimum is min(MIN_BOX_SIZE, image side, MIN_BOX_FRACTION * image side): the 224-px
    # rule assumes ~640-px images and on small images turns every box into half the image.
    v.MIN_BOX_FRACTION = 0.0
    # "objcrop": the geometry above (dilation d ~ U(DILATION) x image side, clipped; small boxes grown
    # to MIN_BOX_SIZE about their centre and shifted into the image). "released": object-cropping-ssl's
    # datasets/openimages_dataset_bing.py exactly (pretrain/views/released.py): each edge moved by
    # RELEASED_DILATION x the coordinate itself, a side shorter than MIN_BOX_SIZE grown by half of it on
    # each side with the released border handling (the crop may reach past the image: black), then
    # RandomResizedCrop(SCALE_OBJ / SCALE_DILATE) with no SCALE_EPS, as torchvision draws it.
    v.GEOMETRY = "objcrop"
    # The released code's --dilation (fixed, not drawn); used by GEOMETRY "released".
    v.RELEASED_DILATION = 0.2
    # RandomResizedCrop area range of whole-image crops ("random" policy, obj-scene's scene view,
    # and the fallback for images without proposals).
    v.RANDOM_SCALE = (0.2, 1.0)

    # MoCo-v2 augmentations, applied to each view after cropping. Pairs are (view 1, view 2)
    # so that BYOL's asymmetric recipe (blur 1.0/0.1, solarize 0.0/0.2) is a config change.
    v.COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    v.COLOR_JITTER_PROB = 0.8
    v.GRAYSCALE_PROB = 0.2
    # Gaussian blur sigma range meant for 224-px views; scaled by CROP_SIZE / 224 so that a
    # small crop is not blurred out of recognition (a 224-px sigma erases a 10-px object).
    v.BLUR_SIGMA = (0.1, 2.0)
    v.BLUR_PROB = (0.5, 0.5)
    v.SOLARIZE_PROB = (0.0, 0.0)
    v.FLIP_PROB = 0.5
    v.PIXEL_MEAN = TORCHVISION_MEAN
    v.PIXEL_STD = TORCHVISION_STD
    # Where the augmentations above run during pretraining: "worker" (each view in the loader's
    # workers) or "device" (the workers only cut the crops and draw each view's parameters; the
    # trainer applies them to the whole batch on the training device). The same draws and the same
    # pixels up to float rounding; "device" frees the CPU, which limits a GPU run's throughput.
    v.AUGMENT_ON = "worker"

    # DiLo copy-paste: paste the salient foreground onto another background before cropping.
    v.COPY_PASTE = CfgNode()
    v.COPY_PASTE.ENABLED = False
    # "dilo": DiLo's released saliency_dataset.py: each view draws its own paste (p PROB), its own
    # background and its own edge blur, and the alpha is the continuous saliency map (the store's
    # soft map when it has one). "shared": one draw for the pair, so both views show the same pasted
    # image on the same background; the study's copy-paste rows measured this variant.
    v.COPY_PASTE.MODE = "shared"
    v.COPY_PASTE.PROB = 0.3
    # Probability of softening the mask edge with a Gaussian blur.
    v.COPY_PASTE.BLUR_PROB = 0.5
    # "dilo": the edge blur's sigma in pixels of the image the policy gets (DiLo: GaussianBlur(5)).
    # "shared" draws 1-3 px per 224 px of the image instead.
    v.COPY_PASTE.EDGE_SIGMA = 5.0
    # Backgrounds drawn uniformly from: "grey" (random intensity), "image" (another image of
    # the dataset, supplied by the dataset as a callable), "texture" (generated). Empty: the
    # mode's own, MODE_BACKGROUNDS (dilo: grey, as DiLo; shared: all three).
    v.COPY_PASTE.BACKGROUNDS = ()

    cfg.VIEWS = v
    return cfg


def get_views_cfg() -> CfgNode:
    """A config holding only the VIEWS node, with defaults (for tools and tests)."""
    return add_views_config(CfgNode())
