"""pretrain/views/geometry.py: box arithmetic cases that mutation testing (benchmarks/mutation.md) found no
test checking. Pure and fast: one call per case, numbers worked by hand."""
import torch

from objcrop.pretrain.views.geometry import (box_iou, centre_crop_in, contains, dilate_box, grow_box,
                                             random_resized_crop_in)


def test_grow_box_keeps_a_box_near_the_border_where_it_is():
    """Guards against growing clamping to 1 px instead of 0, or a box near the image's left/top edge
    being pushed to the edge although the grown box fits: views would drift off the object."""
    assert grow_box((0.5, 0.5, 50.0, 50.0), 10, 10, 100, 100) == (0.5, 0.5, 50.0, 50.0)
    # 2 px wide at x 10..12, grown to 21 px about its centre 11: 0.5..21.5 fits, nothing to shift
    assert grow_box((10.0, 10.0, 12.0, 12.0), 21, 21, 100, 100) == (0.5, 0.5, 21.5, 21.5)


def test_dilate_box_moves_each_side_by_its_own_axis():
    """Guards against the vertical dilation computed with the width (or divided by the height)."""
    assert dilate_box((10.0, 10.0, 20.0, 20.0), 0.1, 100, 50) == (0.0, 5.0, 30.0, 25.0)


def test_box_iou_of_boxes_apart_on_one_axis_and_of_sub_pixel_boxes():
    """Guards against the overlap on one axis being clamped at 1 px instead of 0 (boxes side by side on
    y would overlap), and against IoU refusing boxes whose union is under one square pixel."""
    assert box_iou((0.0, 0.0, 10.0, 10.0), (0.0, 20.0, 10.0, 30.0)) == 0.0
    assert box_iou((0.0, 0.0, 10.0, 10.0), (20.0, 0.0, 30.0, 10.0)) == 0.0
    assert box_iou((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5)) == 1.0


def test_contains_accepts_equal_edges_without_tolerance():
    """Guards against a strict comparison on any edge: a box contains itself even with tol=0."""
    box = (10.0, 20.0, 50.0, 60.0)
    assert contains(box, box, tol=0.0)
    for edge in range(4):
        inner = list(box)
        inner[edge] += -1e-9 if edge < 2 else 1e-9
        assert not contains(box, tuple(inner), tol=0.0)


def test_centre_crop_in_keeps_at_least_one_pixel_and_no_more():
    """Guards against the one-pixel floor of a clamped side becoming two pixels."""
    assert centre_crop_in((0, 0, 1, 9), (1.0, 1.0)) == (0, 4, 1, 5)
    assert centre_crop_in((0, 0, 9, 1), (1.0, 1.0)) == (4, 0, 5, 1)


def test_random_resized_crop_raises_a_zero_scale_to_scale_eps():
    """Guards against the obj view's scale (0, s) being drawn from 0 (crops of a few pixels, or none that
    fit and a silent fall-back to the centred crop) instead of from scale_eps. A scale of exactly (0, 0)
    makes every draw the eps area: a 100 x 100 region and eps 0.25 give a 50 x 50 crop, placed by the
    first draw's x and y."""
    g = torch.Generator().manual_seed(0)
    _, _, u_x, u_y = torch.rand(10, 4, generator=torch.Generator().manual_seed(0))[0].tolist()
    x0, y0 = 7 + int(u_x * 51), 3 + int(u_y * 51)
    assert random_resized_crop_in((7, 3, 107, 103), (0.0, 0.0), (1.0, 1.0), g, scale_eps=0.25) == (
        x0, y0, x0 + 50, y0 + 50)
    # without the eps every target is 0 px: no attempt fits, and the centred crop is the fall-back
    assert random_resized_crop_in((7, 3, 107, 103), (0.0, 0.0), (1.0, 1.0), g, scale_eps=0.0) == (7, 3, 107, 103)


def test_integer_region_of_boxes_at_and_past_the_image_border():
    """Guards against the region's clamps: a box at 0 starting at 1, and a box past the right or bottom edge
    giving a region outside the image or wider than the one pixel left there."""
    from objcrop.pretrain.views.geometry import integer_region

    assert integer_region((0.0, 0.0, 5.0, 5.0), 10, 10) == (0, 0, 5, 5)
    assert integer_region((12.0, 3.2, 15.0, 6.5), 10, 10) == (9, 3, 10, 7)
    assert integer_region((3.2, 12.0, 6.5, 15.0), 10, 10) == (3, 9, 7, 10)
    assert integer_region((2.0, 2.0, 2.0, 2.0), 10, 10) == (2, 2, 3, 3)  # at least 1 px on each side


def _crop_with_draws(monkeypatch, rows, region, scale, ratio, **kwargs):
    """random_resized_crop_in with its 10 attempts' (scale, ratio, x, y) draws chosen: the rows given, the
    last one repeated, so that each case is worked by hand."""
    import types

    from objcrop.pretrain.views import geometry

    rows = (list(rows) + [rows[-1]] * 10)[:10]
    fake_torch = types.SimpleNamespace(rand=lambda *shape, generator=None: torch.tensor(rows))
    monkeypatch.setattr(geometry, "torch", fake_torch)
    return geometry.random_resized_crop_in(region, scale, ratio, None, **kwargs)


A_ROW = [0.5, 0.75, 0.5, 0.5]  # area 5000 x (0.08 + 0.92 / 2) = 2700, aspect exp(mid-log of 0.5..2 at 3/4) = √2


def test_random_resized_crop_draws_area_aspect_and_position_like_torchvision(monkeypatch):
    """Guards against the crop's size and place: area from scale (its own lower bound, the default scale_eps),
    aspect log-uniform over the whole ratio range, width √(area·aspect) and height √(area/aspect), the corner
    uniform over the w − cw + 1 places. 100 x 50 region: 62 x 44 (√3818.4, √1909.2), x0 = ⌊0.5·39⌋ = 19,
    y0 = ⌊0.5·7⌋ = 3."""
    assert _crop_with_draws(monkeypatch, [A_ROW], (0, 0, 100, 50), (0.08, 1.0), (0.5, 2.0)) == (19, 3, 81, 47)


def test_random_resized_crop_accepts_a_crop_of_the_whole_region_and_of_one_pixel(monkeypatch):
    """Guards against the fit test's bounds: a crop exactly as wide and tall as the region fits (the next
    attempt would be taken instead), and so does a 1 x 1 crop (the centred fall-back would be taken)."""
    whole = [1.0, 1.0, 0.3, 0.3]  # area 5000, aspect 2: 100 x 50
    assert _crop_with_draws(monkeypatch, [whole, A_ROW], (0, 0, 100, 50), (0.08, 1.0), (0.5, 2.0)) == (0, 0, 100, 50)
    one_px = _crop_with_draws(monkeypatch, [A_ROW], (0, 0, 100, 50), (0.0002, 0.0002), (1.0, 1.0), scale_eps=0.0)
    assert one_px == (50, 25, 51, 26)  # area 1: x0 = ⌊0.5·100⌋, y0 = ⌊0.5·50⌋


def test_random_resized_crop_rejects_a_crop_with_no_width_or_no_height(monkeypatch):
    """Guards against a zero-width or zero-height crop being accepted: area 10 at aspect 1/100 rounds to
    0 x 32, at aspect 100 to 32 x 0; every attempt fails and the centred crop of the clamped ratio is taken."""
    region, scale = (0, 0, 100, 50), (0.002, 0.002)
    assert _crop_with_draws(monkeypatch, [A_ROW], region, scale, (0.01, 0.01), scale_eps=0.0) == (49, 0, 50, 50)
    assert _crop_with_draws(monkeypatch, [A_ROW], region, scale, (100.0, 100.0), scale_eps=0.0) == (0, 24, 100, 25)


def test_min_box_side_may_be_below_one_pixel():
    """Guards against the effective minimum side being floored at 1 px instead of 0."""
    from objcrop.pretrain.views.geometry import min_box_side

    assert min_box_side(100, 0.5, 0.0) == 0.5 and min_box_side(100, 0.0, 0.0) == 0.0
