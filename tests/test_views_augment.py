"""MoCo-v2's augmentations batched on the training device (VIEWS.AUGMENT_ON "device") against the
per-view path the loader's workers run: same draws, same pixels up to float rounding."""
import pytest
import torch

from objcrop.pretrain.views import get_views_cfg
from objcrop.pretrain.views.augment import DeferredAugment, MocoV2Augment, gaussian_blur, gaussian_blur_batch


def random_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    crops = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    crops[: n // 4] = crops[: n // 4, :1]  # some grey crops: hue and saturation have nothing to turn
    return crops


def both_paths(cfg, crops: torch.Tensor, view_index: int = 0):
    augment = MocoV2Augment(cfg)
    per_view = torch.stack([augment(c, view_index, torch.Generator().manual_seed(i)) for i, c in enumerate(crops)])
    deferred = DeferredAugment(augment)
    shipped = [deferred(c, view_index, torch.Generator().manual_seed(i)) for i, c in enumerate(crops)]
    assert all(torch.equal(pixels, c) for (pixels, _), c in zip(shipped, crops))  # the worker leaves pixels alone
    batched = augment.apply_batch(torch.stack([p for p, _ in shipped]), torch.stack([q for _, q in shipped]))
    return per_view, batched


def branchy_cfg(size: int):
    cfg = get_views_cfg().VIEWS
    cfg.CROP_SIZE = size
    cfg.COLOR_JITTER_PROB, cfg.GRAYSCALE_PROB = 0.9, 0.3  # every branch is taken in 64 samples
    cfg.SOLARIZE_PROB = (0.3, 0.3)
    # sigma up to 100 at 224 px: kernels of very different sizes in one batch, the widest capped by the view
    cfg.BLUR_SIGMA = (0.1, 100.0)
    return cfg


@pytest.mark.parametrize("size", [64, 23])
def test_batched_equals_per_view_path(size):
    per_view, batched = both_paths(branchy_cfg(size), random_crops(64, size))
    assert batched.shape == per_view.shape and batched.dtype == torch.float32
    assert (batched - per_view).abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_on_the_gpu_equals_per_view_path_and_never_waits_for_it():
    cfg = branchy_cfg(64)
    augment, crops = MocoV2Augment(cfg), random_crops(64, 64)
    per_view = torch.stack([augment(c, 0, torch.Generator().manual_seed(i)) for i, c in enumerate(crops)])
    params = torch.stack([augment.draw(0, torch.Generator().manual_seed(i)).as_tensor() for i in range(len(crops))])
    crops_gpu, params_gpu = crops.cuda(), params.cuda()
    augment.apply_batch(crops_gpu, params_gpu)  # the first call caches the normalisation constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation inside raises
    try:
        batched = augment.apply_batch(crops_gpu, params_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (batched.cpu() - per_view).abs().max() < 1e-4


def test_batched_respects_disabled_jitter_and_view_specific_probabilities():
    cfg = get_views_cfg().VIEWS
    cfg.CROP_SIZE = 32
    cfg.COLOR_JITTER = (0.4, 0.0, 0.4, 0.0)  # contrast and hue off: not applied, not even as identity
    cfg.BLUR_PROB, cfg.SOLARIZE_PROB = (1.0, 0.0), (0.0, 1.0)  # BYOL's asymmetry, taken to the limit
    crops = random_crops(16, 32, seed=1)
    for view_index in (0, 1):
        per_view, batched = both_paths(cfg, crops, view_index)
        assert (batched - per_view).abs().max() < 1e-4
    params = DeferredAugment(MocoV2Augment(cfg))(crops[0], 1, torch.Generator().manual_seed(0))[1]
    assert params[10] == 0 and params[11] == 1  # view 2: never blurred, always solarized


def test_blur_batch_matches_one_by_one_and_draws_are_the_workers_stream():
    x = torch.rand(5, 3, 20, 20)
    sigmas = torch.tensor([0.3, 1.0, 2.5, 6.0, 0.8])
    one_by_one = torch.stack([gaussian_blur(img, float(s)) for img, s in zip(x, sigmas)])
    assert (gaussian_blur_batch(x, sigmas) - one_by_one).abs().max() < 1e-5
    assert (gaussian_blur_batch(x, sigmas, max_sigma=20.0) - one_by_one).abs().max() < 1e-5  # wider than any
    # Deferring consumes the generator exactly as augmenting does: the next draw is the same.
    augment, crop = MocoV2Augment(get_views_cfg().VIEWS), random_crops(1, 16)[0]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    augment(crop, 0, g1)
    DeferredAugment(augment)(crop, 0, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_deferred_copy_paste_policy_ships_crops_and_parameters():
    # DiLo copy-paste wraps the policy that augments: deferring reaches through it
    from objcrop.pretrain.views import build_view_policy, defer_augment

    cfg = get_views_cfg()
    cfg.VIEWS.POLICY, cfg.VIEWS.CROP_SIZE = "obj-obj-dilate", 24
    cfg.VIEWS.COPY_PASTE.ENABLED, cfg.VIEWS.COPY_PASTE.PROB = True, 1.0
    policy = build_view_policy(cfg)
    augment = defer_augment(policy)
    assert defer_augment(policy) is augment  # idempotent
    image = random_crops(1, 48)[0]
    mask = torch.zeros(48, 48, dtype=torch.uint8)
    mask[8:30, 10:40] = 1
    views = policy(image, torch.tensor([[10.0, 8.0, 40.0, 30.0]]), mask=mask, generator=torch.Generator().manual_seed(0))
    assert policy.pasted == 1
    for crop, params in views:
        assert crop.dtype == torch.uint8 and crop.shape == (3, 24, 24) and params.shape == (13,)
    assert augment.apply_batch(torch.stack([views[0][0]]), torch.stack([views[0][1]])).dtype == torch.float32


def test_per_view_blur_and_hue_are_torchvisions():
    """The worker's own blur (shifted sums for few taps, a separable convolution for many) and hue
    shift stand in for torchvision's `gaussian_blur` and `adjust_hue`: same pixels up to float
    rounding, including grey pixels (no hue) and the reflect padding at the borders."""
    import torchvision.transforms.v2.functional as TF

    from objcrop.pretrain.views.augment import _kernel_size, adjust_hue

    x = random_crops(4, 64).float() / 255.0
    for sigma in (0.05, 0.3, 0.57, 1.5, 4.0, 12.0):  # 3 to 63 taps: both paths
        k = _kernel_size(sigma, 64, 64)
        for img in x:
            ref = TF.gaussian_blur(img, [k, k], [sigma, sigma])
            assert (gaussian_blur(img, sigma) - ref).abs().max() < 1e-5, (sigma, k)
    for factor in (-0.5, -0.21, 0.0, 0.07, 0.5):
        for img in x:
            assert (adjust_hue(img, factor) - TF.adjust_hue(img, factor)).abs().max() < 1e-5, factor
    # and the other colour operations the worker runs (the batched path's, on one image)
    augment = MocoV2Augment(get_views_cfg().VIEWS)
    for ours, theirs in zip(augment.adjust, (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)):
        for factor in ((0.0, 0.6, 1.0, 1.4) if theirs is not TF.adjust_hue else (-0.3, 0.2)):
            for img in x:
                assert (ours(img, factor) - theirs(img, factor)).abs().max() < 1e-5, (theirs.__name__, factor)


def test_the_worker_and_the_batched_path_compute_the_same_floats():
    """Not just close: a training step amplifies a 1e-6 difference in the views past any tolerance on the
    losses (tests/test_pretrain_engine.py compares the two placements' losses), so the per-view path runs
    the batched path's arithmetic, on MoCo-v2's own settings."""
    for size in (64, 32):
        cfg = get_views_cfg().VIEWS
        cfg.CROP_SIZE = size
        for view_index in (0, 1):
            per_view, batched = both_paths(cfg, random_crops(64, size, seed=size), view_index)
            assert torch.equal(per_view, batched), (size, view_index, (per_view - batched).abs().max())
