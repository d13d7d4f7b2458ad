"""DiLo copy-paste: the foreground is kept, the background replaced, composable with any policy."""
import pytest
import torch

from objcrop.pretrain.views import POLICIES, build_view_policy, get_views_cfg
from objcrop.pretrain.views.copy_paste import CopyPaste, generate_texture


def _cfg(policy, **copy_paste):
    cfg = get_views_cfg()
    cfg.VIEWS.POLICY = policy
    cfg.VIEWS.CROP_SIZE = 32
    cfg.VIEWS.COPY_PASTE.ENABLED = True
    for key, value in copy_paste.items():
        cfg.VIEWS.COPY_PASTE[key] = value
    return cfg


def _scene():
    image = torch.full((3, 60, 80), 10, dtype=torch.uint8)
    image[0, 20:40, 30:50] = 250
    mask = torch.zeros((60, 80), dtype=torch.uint8)
    mask[20:40, 30:50] = 1
    return image, mask


@pytest.mark.parametrize("kind", ["grey", "image", "texture"])
def test_paste_keeps_foreground_and_replaces_background(kind):
    other = torch.full((3, 30, 40), 77, dtype=torch.uint8)
    pol = build_view_policy(_cfg("obj-obj", BLUR_PROB=0.0, BACKGROUNDS=(kind,)),
                            background_fn=lambda g: other)
    image, mask = _scene()
    out = pol.paste(image, mask, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert torch.equal(out[:, 20:40, 30:50], image[:, 20:40, 30:50])
    assert not torch.equal(out[:, :20], image[:, :20])
    if kind == "image":
        assert (out[:, :20] == 77).all()
    if kind == "grey":
        assert (out[0, :20] == out[1, :20]).all() and out[:, :20].unique().numel() == 1


def test_soft_edge_blends_only_near_the_mask_border():
    image, mask = _scene()
    hard = build_view_policy(_cfg("random", BLUR_PROB=0.0, BACKGROUNDS=("grey",)))
    soft = build_view_policy(_cfg("random", BLUR_PROB=1.0, BACKGROUNDS=("grey",)))
    gen_seed = 1
    out_hard = hard.paste(image, mask, torch.Generator().manual_seed(gen_seed))
    out_soft = soft.paste(image, mask, torch.Generator().manual_seed(gen_seed))
    assert torch.equal(out_soft[:, 28:32, 38:42], image[:, 28:32, 38:42])  # the object's centre
    assert int(out_hard[0, 20, 40]) == 250                                   # hard edge: object pixel
    level = int(out_soft[1, 0, 0])                                           # the grey background
    assert level != 250 and abs(int(out_soft[0, 20, 40]) - 250) > 2          # soft edge: blended


@pytest.mark.parametrize("policy", POLICIES)
def test_copy_paste_composes_with_every_policy_and_is_deterministic(policy):
    pol = build_view_policy(_cfg(policy, PROB=1.0))
    image, mask = _scene()
    boxes = torch.tensor([[30.0, 20.0, 50.0, 40.0]])
    a = pol(image, boxes, mask, generator=torch.Generator().manual_seed(3))
    b = pol(image, boxes, mask, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (3, 32, 32) and pol.pasted == 2
    assert pol.fallbacks == 0


def test_without_mask_nothing_is_pasted_and_it_is_counted():
    pol = build_view_policy(_cfg("obj-obj", PROB=1.0))
    image, _ = _scene()
    pol(image, [[30.0, 20.0, 50.0, 40.0]], None, generator=torch.Generator().manual_seed(0))
    assert pol.pasted == 0 and pol.missing_masks == 1


def test_image_backgrounds_are_dropped_without_a_source():
    pol = CopyPaste(build_view_policy(_cfg("random", ENABLED=False)), backgrounds=("image", "texture"))
    assert pol.backgrounds == ["texture"]


def test_textures_vary_and_are_seeded():
    a = generate_texture(40, 50, torch.Generator().manual_seed(0))
    b = generate_texture(40, 50, torch.Generator().manual_seed(0))
    c = generate_texture(40, 50, torch.Generator().manual_seed(1))
    assert a.shape == (3, 40, 50) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.float().std() > 5


@pytest.mark.parametrize("kind", ["grey", "texture", "image"])
def test_views_show_the_pasted_image_through_their_crops(kind):
    # View-space compositing must match pasting the whole image, then cropping (up to edge resampling).
    cfg = _cfg("obj-obj-dilate", PROB=1.0, BLUR_PROB=0.0, BACKGROUNDS=(kind,))
    for key, value in {"COLOR_JITTER_PROB": 0.0, "GRAYSCALE_PROB": 0.0, "BLUR_PROB": (0.0, 0.0), "FLIP_PROB": 0.0}.items():
        cfg.VIEWS[key] = value
    other = torch.randint(0, 256, (3, 45, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    pol = build_view_policy(cfg, background_fn=lambda g: other)
    image, mask = _scene()
    full, plan, views = pol.sample(image, [[30.0, 20.0, 50.0, 40.0]], mask, torch.Generator().manual_seed(4),
                                   render_image=True)
    assert full.shape == image.shape and torch.equal(full[:, 25:35, 35:45], image[:, 25:35, 35:45])
    mean = torch.tensor(cfg.VIEWS.PIXEL_MEAN)[:, None, None]
    std = torch.tensor(cfg.VIEWS.PIXEL_STD)[:, None, None]
    for crop, view in zip(plan.crops, views):
        expected = pol.crop(full, crop).float()
        got = (view * std + mean) * 255
        assert (got - expected).abs().mean() < 4.0
