"""The released crop geometry (VIEWS.GEOMETRY released, object-cropping-ssl's openimages_dataset_bing.py),
checked formula by formula against cases worked by hand (S = 224, delta = 0.2)."""
import pytest
import torch

from objcrop.errors import ConfigError
from objcrop.pretrain.views import build_view_policy, get_views_cfg
from objcrop.pretrain.views import geometry as geo
from objcrop.pretrain.views import released

S = 224


def test_boxes_are_truncated_like_int_of_the_normalised_box():
    assert released.truncate_box((10.9, 20.2, 300.7, 400.99)) == (10, 20, 300, 400)


def test_dilation_moves_each_edge_by_delta_times_the_coordinate_itself():
    # 100 - int(20.0) = 80, 50 - int(10.0) = 40, 300 + int(60.0) = 360, 200 + int(40.0) = 240
    assert released.dilate_box((100, 50, 300, 200), 0.2) == (80, 40, 360, 240)
    # int() truncates each shift: 7 - int(1.4) = 6, 13 - int(2.6) = 11, 33 + int(6.6) = 39, 99 + int(19.8) = 118
    assert released.dilate_box((7, 13, 33, 99), 0.2) == (6, 11, 39, 118)
    # a box at the origin does not move left or up (the shift scales with the coordinate)
    assert released.dilate_box((0, 0, 10, 10), 0.2) == (0, 0, 12, 12)


@pytest.mark.parametrize("lo,hi,limit,expected", [
    ((100), 400, 640, (100, 400)),   # 300 >= 224: unchanged
    (0, 224, 640, (0, 224)),         # exactly 224: unchanged (the rule is diff < 224)
    (300, 350, 640, (188, 462)),     # 300 - 112 = 188 > 0; 350 + 112 = 462 < 640
    (50, 100, 640, (0, 336)),        # 50 - 112 <= 0 -> (0, 224); 224 + 112 = 336 < 640 -> 336 px wide
    (112, 200, 640, (0, 336)),       # 112 - 112 = 0 is not > 0 -> (0, 224), then 336
    (300, 350, 400, (126, 350)),     # 188; 462 >= 400 -> x0 = 350 - 224 = 126
    (300, 400, 512, (176, 400)),     # 188; 400 + 112 = 512 is not < 512 -> x0 = 400 - 224 = 176
    (10, 30, 96, (0, 224)),          # (0, 224); 336 >= 96 -> x0 = 224 - 224 = 0: past a 96-px image
    (150, 160, 200, (-64, 160)),     # 38; 272 >= 200 -> x0 = 160 - 224 = -64: past the left edge
])
def test_small_box_rule_with_the_released_border_handling(lo, hi, limit, expected):
    assert released.grow_axis(lo, hi, limit, S) == expected


def test_the_rule_applies_to_each_axis_and_rounds_like_pil():
    # x: 300-350 in 640 -> (188, 462); y: 50-100 in 480 -> (0, 336)
    assert released.grow_box((300, 50, 350, 100), 640, 480, S) == (188, 0, 462, 336)
    # an odd S: 30 - 3.5 = 26.5 and 31 + 3.5 = 34.5, which round() (PIL's crop) takes to the even 26 and 34
    assert released.grow_box((30, 30, 31, 31), 640, 480, 7) == (26, 26, 34, 34)


def test_dilation_comes_before_the_small_box_rule():
    # dilate (200, 300) -> (160, 360): 200 px < 224, so grow: 160 - 112 = 48, 360 + 112 = 472
    dilated, region = released.region((200.0, 200.0, 300.0, 300.0), 1000, 1000, 0.2, S)
    assert dilated == (160, 160, 360, 360) and region == (48, 48, 472, 472)
    # growing first would give (88, 412), then dilating (71, 494): not the released order
    assert region != released.dilate_box(released.grow_box((200, 200, 300, 300), 1000, 1000, S), 0.2)
    # the object view's region is not dilated (the released code dilates only when dilation > 0)
    assert released.region((200.0, 200.0, 300.0, 300.0), 1000, 1000, 0.0, S)[1] == (88, 88, 412, 412)


def _cfg(policy, **views):
    cfg = get_views_cfg()
    cfg.VIEWS.POLICY, cfg.VIEWS.GEOMETRY = policy, "released"
    for key, value in views.items():
        cfg.VIEWS[key] = value
    return cfg


def test_obj_obj_dilate_plans_follow_the_released_regions():
    pol = build_view_policy(_cfg("obj-obj-dilate", SWAP_PROB=0.0))
    box = (200.0, 150.0, 300.0, 260.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        plan = pol.sample_boxes((480, 640), [box], g)
        assert plan.regions == (released.region(box, 640, 480, 0.0, S)[1], released.region(box, 640, 480, 0.2, S)[1])
        for crop, region in zip(plan.crops, plan.regions):
            assert geo.contains(region, crop)


def test_the_object_view_draws_scale_from_zero_without_scale_eps():
    # RandomResizedCrop(224, scale=(0, 1)) as torchvision draws it: crops below SCALE_EPS of the area occur
    box = [[100.0, 100.0, 500.0, 400.0]]  # wider and taller than 224: the region is the box itself
    g = torch.Generator().manual_seed(1)
    fractions = {}
    for geometry in ("released", "objcrop"):
        pol = build_view_policy(_cfg("obj-obj", GEOMETRY=geometry, SWAP_PROB=0.0, MIN_BOX_SIZE=0))
        areas = []
        for _ in range(2000):
            x0, y0, x1, y1 = pol.sample_boxes((480, 640), box, g).crops[0]
            areas.append((x1 - x0) * (y1 - y0) / (400 * 300))
        fractions[geometry] = min(areas)
    eps = get_views_cfg().VIEWS.SCALE_EPS
    assert fractions["released"] < eps / 2 < fractions["objcrop"]


def test_a_region_past_the_image_reads_black():
    pol = build_view_policy(_cfg("obj-scene", CROP_SIZE=32, MIN_BOX_SIZE=S, SWAP_PROB=0.0))
    image = torch.full((3, 96, 96), 255, dtype=torch.uint8)
    plan = pol.sample_boxes((96, 96), [[10.0, 10.0, 30.0, 30.0]], torch.Generator().manual_seed(0))
    assert plan.crops[1] == (0, 0, S, S)  # worked above: (10, 30) in 96 px -> (0, 224) on both axes
    view = pol.crop(image, plan.crops[1])
    inside = 32 * 96 // S  # the image covers 96 of the 224 px: the first 13 of 32 view pixels
    # (the antialiasing filter blends a pixel or two at the border)
    assert (view[:, : inside - 1, : inside - 1] == 255).all() and (view[:, inside + 2:, :] == 0).all()


def test_obj_scene_and_obj_obj_use_the_undilated_released_region():
    box = (300.0, 200.0, 350.0, 260.0)
    region = released.region(box, 640, 480, 0.0, S)[1]
    scene = build_view_policy(_cfg("obj-scene", SWAP_PROB=0.0)).sample_boxes((480, 640), [box], torch.Generator())
    assert scene.crops[1] == region and scene.regions[0] == (0, 0, 640, 480)
    objobj = build_view_policy(_cfg("obj-obj", SWAP_PROB=0.0)).sample_boxes((480, 640), [box], torch.Generator())
    assert objobj.regions == (region, region)


def test_released_geometry_rejects_objcrop_only_settings():
    with pytest.raises(ConfigError, match="VIEWS.MIN_BOX_FRACTION"):
        build_view_policy(_cfg("obj-obj-dilate", MIN_BOX_FRACTION=0.25))
    with pytest.raises(ConfigError, match="VIEWS.GEOMETRY"):
        build_view_policy(_cfg("obj-obj-dilate", GEOMETRY="paper"))
