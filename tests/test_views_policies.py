"""View policies: geometry of the sampled crops, determinism, fallback, config."""
import pytest
import torch

from objcrop.errors import ConfigError
from objcrop.pretrain.views import POLICIES, build_view_policy, get_views_cfg
from objcrop.pretrain.views import geometry as geo


def _cfg(policy, **overrides):
    cfg = get_views_cfg()
    cfg.VIEWS.POLICY = policy
    for key, value in overrides.items():
        cfg.VIEWS[key] = value
    return cfg


def _random_boxes(gen, n, width, height, min_side=4):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([width - min_side, height - min_side])
    wh = min_side + torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 0.5
    return torch.cat([xy, torch.minimum(xy + wh, torch.tensor([width, height]))], dim=1)


def _inside(crop, width, height):
    x0, y0, x1, y1 = crop
    return 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and all(isinstance(c, int) for c in crop)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_view_lies_inside_its_image(policy):
    pol = build_view_policy(_cfg(policy, CROP_SIZE=64))
    gen = torch.Generator().manual_seed(0)
    for size in [(96, 96), (60, 200), (300, 80), (500, 375)]:
        height, width = size
        for _ in range(50):
            boxes = _random_boxes(gen, 3, width, height)
            plan = pol.sample_boxes(size, boxes, gen)
            assert all(_inside(c, width, height) for c in plan.crops), (size, plan)


def test_obj_obj_views_overlap_their_proposal():
    # MIN_BOX_SIZE 0: the crops are sampled inside the proposal itself, so each must overlap it.
    pol = build_view_policy(_cfg("obj-obj", CROP_SIZE=64, MIN_BOX_SIZE=0))
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        boxes = _random_boxes(gen, 4, 128, 96, min_side=6)
        plan = pol.sample_boxes((96, 128), boxes, gen)
        source = tuple(boxes[plan.box_index].tolist())
        for crop in plan.crops:
            assert geo.box_iou(crop, source) > 0
            # integer rounding may reach at most one pixel past the float box
            assert geo.contains((source[0] - 1, source[1] - 1, source[2] + 1, source[3] + 1), crop)


def test_grown_box_contains_small_proposal_and_has_minimum_size():
    pol = build_view_policy(_cfg("obj-obj", CROP_SIZE=224, MIN_BOX_FRACTION=0.25))
    gen = torch.Generator().manual_seed(2)
    box = torch.tensor([[90.0, 2.0, 96.0, 8.0]])  # tiny, at the image's top-right corner
    plan = pol.sample_boxes((96, 96), box, gen)
    grown = plan.grown_box
    assert geo.contains(grown, tuple(box[0].tolist()))
    assert grown[2] - grown[0] == pytest.approx(24.0) and grown[3] - grown[1] == pytest.approx(24.0)
    assert 0 <= grown[0] and grown[2] <= 96 and 0 <= grown[1] and grown[3] <= 96


def test_pixel_minimum_is_capped_by_the_image():
    assert geo.min_box_side(96, 224, 0.0) == 96
    assert geo.min_box_side(640, 224, 0.0) == 224
    assert geo.min_box_side(96, 224, 0.3) == pytest.approx(28.8)
    assert geo.min_box_side(1000, 224, 0.5) == 224


def test_dilated_box_contains_source_box():
    pol = build_view_policy(_cfg("obj-obj-dilate", CROP_SIZE=32, MIN_BOX_SIZE=0))
    gen = torch.Generator().manual_seed(3)
    for _ in range(200):
        boxes = _random_boxes(gen, 2, 200, 150)
        plan = pol.sample_boxes((150, 200), boxes, gen)
        assert geo.contains(plan.dilated_box, plan.grown_box)
        assert geo.contains(plan.dilated_box, plan.source_box)
        # dilation of 10-20 % of the image size unless clipped by the image border
        d = plan.dilated_box
        s = plan.source_box
        if d[0] > 0:
            assert 0.1 * 200 - 1e-3 <= s[0] - d[0] <= 0.2 * 200 + 1e-3
        # the view inside the dilated box lies in it
        crop = plan.crops[1] if not plan.swapped else plan.crops[0]
        assert geo.contains(geo.integer_region(d, 200, 150), crop)


def test_obj_scene_object_view_is_the_grown_box():
    pol = build_view_policy(_cfg("obj-scene", CROP_SIZE=32, MIN_BOX_SIZE=0, SWAP_PROB=0.0))
    plan = pol.sample_boxes((100, 100), [[10.0, 20.0, 50.0, 70.0]], torch.Generator().manual_seed(0))
    assert plan.crops[1] == (10, 20, 50, 70)
    assert plan.regions[0] == (0, 0, 100, 100)


def test_swap_probability_is_respected():
    pol = build_view_policy(_cfg("obj-obj-dilate", CROP_SIZE=32))
    gen = torch.Generator().manual_seed(4)
    swaps = sum(pol.sample_boxes((64, 64), [[5, 5, 40, 40]], gen).swapped for _ in range(400))
    assert 150 < swaps < 250


@pytest.mark.parametrize("policy", POLICIES)
def test_views_are_deterministic_under_a_seed_and_vary_without(policy):
    pol = build_view_policy(_cfg(policy, CROP_SIZE=48))
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 30.0, 110.0, 85.0]])
    torch.manual_seed(123)
    a = pol(image, boxes, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(456)  # the global RNG must not matter when a generator is given
    b = pol(image, boxes, generator=torch.Generator().manual_seed(7))
    c = pol(image, boxes, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    for view in a:
        assert view.shape == (3, 48, 48) and view.dtype == torch.float32 and torch.isfinite(view).all()


def test_views_are_normalised_with_torchvision_statistics():
    pol = build_view_policy(_cfg("random", CROP_SIZE=32, COLOR_JITTER_PROB=0.0, GRAYSCALE_PROB=0.0,
                                 BLUR_PROB=(0.0, 0.0), FLIP_PROB=0.0))
    image = torch.full((3, 50, 50), 255, dtype=torch.uint8)
    v1, _ = pol(image, None, generator=torch.Generator().manual_seed(0))
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(v1.mean(dim=(1, 2)), expected, atol=1e-4)


@pytest.mark.parametrize("policy", ["obj-obj", "obj-obj-dilate", "obj-scene"])
def test_image_without_proposals_falls_back_to_random_and_is_counted(policy):
    pol = build_view_policy(_cfg(policy, CROP_SIZE=32))
    image = torch.zeros((3, 40, 60), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    pol(image, torch.zeros((0, 4)), generator=gen)
    pol(image, None, generator=gen)
    pol(image, [[5.0, 5.0, 5.2, 30.0]], generator=gen)  # degenerate (< 1 px wide): unusable
    pol(image, [[5.0, 5.0, 30.0, 30.0]], generator=gen)
    assert pol.fallbacks == 3 and pol.calls == 4


def test_blur_sigma_scales_with_crop_size():
    small = build_view_policy(_cfg("random", CROP_SIZE=56))
    assert small.augment.blur_sigma == pytest.approx((0.1 * 56 / 224, 2.0 * 56 / 224))


def test_bad_config_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match="VIEWS.POLICY"):
        build_view_policy(_cfg("obj-random"))
    with pytest.raises(ConfigError, match="VIEWS.SCALE_OBJ"):
        build_view_policy(_cfg("obj-obj", SCALE_OBJ=(0.5, 0.2)))
    with pytest.raises(ConfigError, match="VIEWS.COPY_PASTE.BACKGROUNDS"):
        cfg = _cfg("random")
        cfg.VIEWS.COPY_PASTE.BACKGROUNDS = ("sky",)
        build_view_policy(cfg)
    with pytest.raises(ConfigError, match="VIEWS.COLOR_JITTER: .*hue's at most 0.5"):
        build_view_policy(_cfg("random", COLOR_JITTER=(0.4, 0.4, 0.4, 0.6)))
