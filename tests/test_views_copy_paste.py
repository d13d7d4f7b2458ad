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


# -- DiLo's released copy-paste (VIEWS.COPY_PASTE.MODE dilo) ---------------------------------------
def _dilo(policy="random", size=64, **copy_paste):
    """Whole-image crops at the image size and no photometric augmentation: a view is the pasted image."""
    cfg = _cfg(policy, MODE="dilo", **copy_paste)
    for key, value in {"CROP_SIZE": size, "RANDOM_SCALE": (1.0, 1.0), "RATIO": (1.0, 1.0), "COLOR_JITTER_PROB": 0.0,
                       "GRAYSCALE_PROB": 0.0, "BLUR_PROB": (0.0, 0.0), "FLIP_PROB": 0.0}.items():
        cfg.VIEWS[key] = value
    return cfg


def _square_scene(size=64):
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(11))
    mask = torch.zeros((size, size), dtype=torch.uint8)
    mask[20:40, 24:48] = 1
    return image, mask


def _pixels(cfg, view):
    mean = torch.tensor(cfg.VIEWS.PIXEL_MEAN)[:, None, None]
    std = torch.tensor(cfg.VIEWS.PIXEL_STD)[:, None, None]
    return ((view * std + mean) * 255).round()


def test_dilo_views_of_one_pair_get_their_own_backgrounds_while_the_foreground_agrees():
    cfg = _dilo(PROB=1.0, BLUR_PROB=0.0)
    pol = build_view_policy(cfg)
    image, mask = _square_scene()
    fg, bg = mask.bool(), ~mask.bool()
    different = 0
    seeds = range(20)
    for seed in seeds:
        _, plan, views = pol.sample(image, None, mask, torch.Generator().manual_seed(seed))
        v1, v2 = (_pixels(cfg, v) for v in views)
        assert plan.pasted == (True, True)
        assert torch.equal(v1[:, fg], image[:, fg].float()) and torch.equal(v2[:, fg], image[:, fg].float())
        levels = [v[:, bg].unique() for v in (v1, v2)]
        assert all(len(level) == 1 for level in levels)  # each view: one grey
        different += int(levels[0] != levels[1])
    # 255 grey levels per view, drawn independently: two equal greys in 20 pairs would be a 1-in-13 event
    assert different >= len(seeds) - 1


def test_dilo_pastes_each_view_independently_with_its_probability():
    cfg = _dilo(size=16, PROB=0.3, BLUR_PROB=0.0)
    pol = build_view_policy(cfg)
    image, mask = _square_scene(16)
    mask[:] = 0
    mask[4:12, 4:12] = 1
    g = torch.Generator().manual_seed(0)
    draws = [pol.sample(image, None, mask, g)[1].pasted for _ in range(1000)]
    p = cfg.VIEWS.COPY_PASTE.PROB
    n = len(draws)
    tolerance = lambda q: 4 * (q * (1 - q) / n) ** 0.5  # four standard errors of a binomial fraction
    for view in range(2):
        assert abs(sum(d[view] for d in draws) / n - p) < tolerance(p)
    both = sum(d[0] and d[1] for d in draws) / n
    assert abs(both - p * p) < tolerance(p * p)  # independent draws; one draw per pair would give p
    assert pol.pasted_views == [sum(d[v] for d in draws) for v in range(2)]


def test_dilo_grey_is_floor_of_uniform_times_255():
    pol = CopyPaste(None, backgrounds=("grey",), mode="dilo")
    g = torch.Generator().manual_seed(0)
    levels = {pol.sample_background(8, 8, g).level for _ in range(20000)}
    assert levels == set(range(255))  # 0..254, never 255, as math.floor(random.random() * 255)


def test_soft_alpha_blends_foreground_and_background():
    cfg = _dilo(PROB=1.0, BLUR_PROB=0.0)
    pol = build_view_policy(cfg)
    image, mask = _square_scene()
    alpha = mask.float() * 0.5  # a continuous saliency map: half foreground
    alpha[20:40, 24:30] = 1.0
    out = pol.paste(image, alpha, torch.Generator().manual_seed(2))
    level = out[:, 0, 0].float()  # the grey where the alpha is 0
    half = alpha == 0.5
    expected = (0.5 * image.float() + 0.5 * level[:, None, None]).round()
    assert (out.float() - expected)[:, half].abs().max() <= 1  # uint8 rounding of the alpha
    assert torch.equal(out[:, alpha == 1.0], image[:, alpha == 1.0])
    binary = pol.paste(image, (alpha > 0).to(torch.uint8), torch.Generator().manual_seed(2))
    assert torch.equal(binary[:, half], image[:, half])  # an integer mask is binary


def test_dilo_edge_blur_is_a_gaussian_of_edge_sigma_over_the_whole_image():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    cfg = _dilo(PROB=1.0, BLUR_PROB=1.0)
    pol = build_view_policy(cfg)
    image, mask = _square_scene()
    out = pol.paste(image, mask, torch.Generator().manual_seed(5)).float()
    level = float(out[0, 0, 0])
    sigma = cfg.VIEWS.COPY_PASTE.EDGE_SIGMA
    # scipy's "mirror" is torch's "reflect"; truncate 3 gives the same 6-sigma-wide kernel
    a = scipy_ndimage.gaussian_filter(mask.numpy().astype(np.float64) * 255, sigma, mode="mirror", truncate=3.0)
    a = torch.from_numpy(np.round(a)).float()[None] / 255.0
    expected = a * image.float() + (1 - a) * level
    assert (out - expected).abs().max() <= 1.0
    assert (a[0, 20:40, 24:48] < 1).any() and (a[0, :20] > 0).any()  # the edge is soft on both sides


@pytest.mark.parametrize("key,value", [("MODE", "per-pair"), ("EDGE_SIGMA", 0.0), ("BACKGROUNDS", ("grey", "noise"))])
def test_bad_copy_paste_settings_name_their_key(key, value):
    from objcrop.errors import ConfigError

    with pytest.raises(ConfigError, match=f"VIEWS.COPY_PASTE.{key}"):
        build_view_policy(_cfg("random", **{key: value}))


def test_each_mode_has_its_own_default_backgrounds():
    from objcrop.pretrain.views.config import MODE_BACKGROUNDS

    assert build_view_policy(_cfg("random", MODE="dilo")).backgrounds == ["grey"] == list(MODE_BACKGROUNDS["dilo"])
    assert build_view_policy(_cfg("random")).backgrounds == ["grey", "texture"]  # no image source given


def test_a_crop_past_the_image_is_black_background_included():
    from objcrop.pretrain.views.copy_paste import Background, _alpha, composite

    image, mask = _scene()  # 60 x 80
    out = composite(image, _alpha(mask, (60, 80)), Background("grey", level=128), (-20, 0, 80, 60), (60, 100), None)
    assert (out[:, :, :18] == 0).all() and (out[:, :5, 25:] == 128).all()  # padding black, the grey inside
