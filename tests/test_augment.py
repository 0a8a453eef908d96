import math

import pytest
import torch
import torch.nn.functional as F

from reference_models.augment import (  # draw layout, to recover factors
    _N_UNIFORMS,
    _U_CON,
    _U_HUE,
    _U_SAT,
    AugmentConfig,
    BatchAugment,
    identity_config,
)

LUMA = torch.tensor([0.299, 0.587, 0.114])


def cfg(**kw) -> AugmentConfig:
    """Identity config with a few fields switched on."""
    c = identity_config()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def x():
    return torch.rand(16, 3, 12, 10, generator=gen(123))


def simclr_cfg() -> AugmentConfig:
    return AugmentConfig(blur_p=0.5, solarize_p=0.2)


# -- config -----------------------------------------------------------------------------------


def test_from_dict_accepts_lists():
    c = AugmentConfig.from_dict({"crop_scale": [0.5, 1], "blur_sigma": [0.2, 1.0], "flip_p": 0.0})
    assert c.crop_scale == (0.5, 1.0) and isinstance(c.crop_scale, tuple)
    assert c.blur_sigma == (0.2, 1.0)
    assert c.flip_p == 0.0 and c.hue == 0.1
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"not_a_field": 1})


def test_invalid_config_rejected():
    with pytest.raises(ValueError):
        BatchAugment(cfg(blur_kernel=4))
    with pytest.raises(ValueError):
        BatchAugment(cfg(flip_p=1.5))


# -- known answers ----------------------------------------------------------------------------


def test_identity_returns_copy(x):
    y = BatchAugment(identity_config())(x, gen())
    assert torch.equal(y, x)
    assert y.data_ptr() != x.data_ptr()


def test_flip_only(x):
    y = BatchAugment(cfg(flip_p=1.0))(x, gen())
    assert torch.equal(y, x.flip(-1))


def test_flip_through_warp_path(x):
    # Scale (1, 1) with a non-trivial ratio range forces the grid_sample path; ratio is then
    # clamped to a full-image crop, so the result must still be an exact mirror (up to rounding).
    y = BatchAugment(cfg(flip_p=1.0, crop_ratio=(1.0, 1.0 + 1e-9)))(x, gen())
    torch.testing.assert_close(y, x.flip(-1), atol=1e-5, rtol=0)


def test_full_crop_is_identity(x):
    y = BatchAugment(cfg(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)))(x, gen())
    torch.testing.assert_close(y, x)
    y = BatchAugment(cfg(crop_ratio=(1.0, 1.0 + 1e-9)))(x, gen())  # warp path, still the full image
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_crop_zooms_ramp():
    # A 2x zoom on a smooth ramp: the output must be a monotone ramp covering a sub-range of the input.
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(4, 3, 32, 32).contiguous()
    y = BatchAugment(cfg(crop_scale=(0.25, 0.25)))(ramp, gen())
    row = y[:, 0, 0]
    assert (row[:, 1:] >= row[:, :-1] - 1e-6).all()
    span = row[:, -1] - row[:, 0]
    assert torch.allclose(span, torch.full_like(span, 0.5), atol=0.05)


def test_constant_image_stays_constant():
    x = torch.full((8, 3, 16, 16), 0.37)
    c = cfg(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 4 / 3), flip_p=0.5, blur_p=1.0, blur_kernel=5)
    y = BatchAugment(c)(x, gen())
    torch.testing.assert_close(y, x)


def test_grayscale_luma(x):
    y = BatchAugment(cfg(gray_p=1.0))(x, gen())
    expected = (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
    for ch in range(3):
        torch.testing.assert_close(y[:, ch : ch + 1], expected)


def test_grayscale_probability_partial():
    x = torch.rand(512, 3, 4, 4, generator=gen(1))
    y = BatchAugment(cfg(gray_p=0.2))(x, gen(2))
    is_gray = (y[:, 0] == y[:, 1]).all(-1).all(-1) & (y[:, 1] == y[:, 2]).all(-1).all(-1)
    unchanged = (y == x).flatten(1).all(1)
    assert (is_gray ^ unchanged).all()
    assert 0.12 < is_gray.float().mean() < 0.28


def test_brightness_strength_zero_is_identity(x):
    y = BatchAugment(cfg(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0))(x, gen())
    assert torch.equal(y, x)


def test_brightness_is_per_sample_scale(x):
    y = BatchAugment(cfg(jitter_p=1.0, brightness=0.5))(x * 0.5, gen())
    ratio = y / (x * 0.5)
    per_sample = ratio.flatten(1)
    # One factor per sample, within [0.5, 1.5], and not all equal.
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-5)
    f = per_sample[:, 0]
    assert (f >= 0.5 - 1e-6).all() and (f <= 1.5 + 1e-6).all()
    assert f.std() > 0.05


def test_jitter_neutral_for_skipped_samples():
    x = torch.rand(256, 3, 4, 4, generator=gen(5))
    y = BatchAugment(cfg(jitter_p=0.5, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))(x, gen(6))
    unchanged = (y == x).flatten(1).all(1)
    # Skipped samples must be bit-identical; roughly half are skipped.
    assert 0.35 < unchanged.float().mean() < 0.65


def test_hue_preserves_grey_and_luma():
    torch.manual_seed(0)
    grey = torch.rand(8, 1, 6, 6).expand(8, 3, 6, 6).contiguous()
    aug = BatchAugment(cfg(jitter_p=1.0, hue=0.5))
    torch.testing.assert_close(aug(grey, gen()), grey, atol=1e-6, rtol=0)
    # Low-saturation colours stay in gamut, so the YIQ rotation keeps luma exactly.
    x = 0.5 + 0.1 * (torch.rand(8, 3, 6, 6) - 0.5)
    y = aug(x, gen())
    luma = lambda t: (t * LUMA.view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(luma(y), luma(x), atol=1e-5, rtol=0)
    assert (y - x).abs().max() > 1e-3


def test_solarize_known_pixels():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.7, 1.0]).view(1, 1, 1, 6).expand(2, 3, 1, 6).contiguous()
    y = BatchAugment(cfg(solarize_p=1.0, solarize_threshold=0.5))(x, gen())
    expected = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.3, 0.0]).view(1, 1, 1, 6).expand(2, 3, 1, 6)
    torch.testing.assert_close(y, expected)


def test_blur_reduces_noise_variance_and_keeps_mean():
    x = torch.rand(32, 3, 32, 32, generator=gen(7))
    y = BatchAugment(cfg(blur_p=1.0, blur_sigma=(1.0, 2.0), blur_kernel=5))(x, gen())
    assert (y.var(dim=(2, 3)) < 0.6 * x.var(dim=(2, 3))).all()
    torch.testing.assert_close(y.mean(), x.mean(), atol=5e-3, rtol=0)


def test_blur_matches_reference_conv():
    # Blur with a (nearly) fixed sigma equals an explicit reflect-padded 2-D Gaussian.
    x = torch.rand(4, 3, 9, 11, generator=gen(8))
    sigma, k = 1.3, 5
    y = BatchAugment(cfg(blur_p=1.0, blur_sigma=(sigma, sigma), blur_kernel=k))(x, gen())
    off = torch.arange(k) - k // 2
    g = torch.exp(-(off.float() ** 2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(3, 1, k, k)
    ref = F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), w, groups=3)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_blur_zero_probability_samples_untouched():
    x = torch.rand(64, 3, 8, 8, generator=gen(9))
    y = BatchAugment(cfg(blur_p=0.5))(x, gen(10))
    unchanged = (y == x).flatten(1).all(1)
    assert 0.25 < unchanged.float().mean() < 0.75


# -- generic properties -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_range_shape_dtype(dtype):
    x = torch.rand(32, 3, 16, 16, generator=gen(11)).to(dtype)
    with torch.no_grad():
        y = BatchAugment(simclr_cfg())(x, gen())
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert torch.isfinite(y.float()).all()


def test_does_not_modify_input(x):
    before = x.clone()
    BatchAugment(simclr_cfg())(x, gen())
    assert torch.equal(x, before)


def test_in_place_steps_never_touch_input(x):
    # Trivial crop + jitter: the crop stage is a copy, and the jitter then runs in place on it.
    before = x.clone()
    BatchAugment(cfg(jitter_p=1.0, brightness=0.4, contrast=0.4, solarize_p=1.0))(x, gen())
    assert torch.equal(x, before)


def test_input_requiring_grad_outside_no_grad(x):
    y = BatchAugment(simclr_cfg())(x.clone().requires_grad_(True), gen())
    assert not y.requires_grad and y.shape == x.shape


def test_channels_last_input(x):
    xc = x.contiguous(memory_format=torch.channels_last)
    for c in (simclr_cfg(), cfg(jitter_p=1.0, saturation=0.4, gray_p=1.0)):
        torch.testing.assert_close(BatchAugment(c)(xc, gen(3)), BatchAugment(c)(x, gen(3)))


def test_reproducible_with_generator(x):
    aug = BatchAugment(simclr_cfg())
    a = aug(x, gen(42))
    b = aug(x, gen(42))
    c = aug(x, gen(43))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_without_generator_runs(x):
    y = BatchAugment(simclr_cfg())(x)
    assert y.shape == x.shape


def test_one_channel_input_skips_colour_ops():
    x = torch.rand(16, 1, 12, 12, generator=gen(12))
    c = AugmentConfig(jitter_p=1.0, gray_p=1.0, blur_p=0.5, solarize_p=0.5)
    y = BatchAugment(c)(x, gen())
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # Only saturation/hue/gray active: on one channel they are skipped, so the output is the input.
    y = BatchAugment(cfg(jitter_p=1.0, saturation=0.4, hue=0.1, gray_p=1.0))(x, gen())
    assert torch.equal(y, x)


def test_empty_batch():
    x = torch.rand(0, 3, 8, 8)
    assert BatchAugment(simclr_cfg())(x, gen()).shape == x.shape


# -- cross-checks against kornia --------------------------------------------------------------


def test_grayscale_matches_kornia(x):
    kornia = pytest.importorskip("kornia")
    y = BatchAugment(cfg(gray_p=1.0))(x, gen())
    torch.testing.assert_close(y[:, :1], kornia.color.rgb_to_grayscale(x))


def test_brightness_matches_kornia_multiplicative(x):
    kornia = pytest.importorskip("kornia")
    x = x * 0.6
    y = BatchAugment(cfg(jitter_p=1.0, brightness=0.4))(x, gen(99))
    f = (y.flatten(1) / x.flatten(1)).median(1).values  # each sample's factor (no clipping below 0.6 * 1.4)
    # Our brightness is multiplicative (PIL/torchvision); kornia's adjust_brightness is additive,
    # adjust_brightness_accumulative is the multiplicative one.
    ref = kornia.enhance.adjust_brightness_accumulative(x, f)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_contrast_matches_kornia_mean_subtraction():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(16, 3, 12, 10, generator=gen(13))
    aug = BatchAugment(cfg(jitter_p=1.0, contrast=0.4))
    y = aug(x, gen(99))
    # Recover per-sample factors from the same uniforms the module draws.
    u = torch.rand(16, _N_UNIFORMS, generator=gen(99))
    f = 0.6 + 0.8 * u[:, _U_CON]
    # kornia.enhance.adjust_contrast is a plain multiply; the mean-blending variant is ours.
    ref = kornia.enhance.adjust_contrast_with_mean_subtraction(x, f)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_saturation_matches_kornia_gray_subtraction():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(16, 3, 12, 10, generator=gen(14))
    y = BatchAugment(cfg(jitter_p=1.0, saturation=0.4))(x, gen(99))
    u = torch.rand(16, _N_UNIFORMS, generator=gen(99))
    f = 0.6 + 0.8 * u[:, _U_SAT]
    # kornia.enhance.adjust_saturation scales S in HSV; the luma-blend variant matches ours.
    ref = kornia.enhance.adjust_saturation_with_gray_subtraction(x, f)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_hue_direction_agrees_with_kornia_hsv():
    kornia = pytest.importorskip("kornia")
    # YIQ rotation is a linear approximation of the HSV hue shift, not equal to it: on mid-range
    # colours the change points the same way (cosine ~0.7) with about the same size.
    x = 0.25 + 0.5 * torch.rand(16, 3, 12, 10, generator=gen(15))
    y = BatchAugment(cfg(jitter_p=1.0, hue=0.1))(x, gen(99))
    u = torch.rand(16, _N_UNIFORMS, generator=gen(99))
    h = (2 * u[:, _U_HUE] - 1) * 0.1
    ref = kornia.enhance.adjust_hue(x, 2 * math.pi * h)
    d_ours, d_ref = (y - x).flatten(), (ref - x).flatten()
    assert F.cosine_similarity(d_ours, d_ref, dim=0) > 0.5
    assert 0.7 < d_ours.norm() / d_ref.norm() < 1.4


# -- accelerator (skipped on CPU-only machines) -----------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_reproducible_and_in_range(dtype):
    x = torch.rand(64, 3, 16, 16, device="cuda").to(dtype)
    aug = BatchAugment(simclr_cfg())
    g = lambda s: torch.Generator(device="cuda").manual_seed(s)
    with torch.no_grad():
        a, b, c = aug(x, g(0)), aug(x, g(0)), aug(x, g(1))
    assert a.device == x.device and a.dtype == dtype and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_on_deterministic_ops():
    x = torch.rand(8, 3, 16, 16, generator=gen(16))
    for c in (identity_config(), cfg(flip_p=1.0), cfg(gray_p=1.0), cfg(solarize_p=1.0)):
        aug = BatchAugment(c)
        torch.testing.assert_close(aug(x.cuda()).cpu(), aug(x))


def test_gaussian_noise_is_seeded_and_stays_in_range():
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
                        noise_std=0.1)
    x = torch.full((4, 3, 8, 8), 0.5)
    a = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    b = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert 0.05 < (a - x).std().item() < 0.15 and a.min() >= 0 and a.max() <= 1


def test_at_strength_interpolates_from_the_identity_to_the_config():
    from reference_models.augment import at_strength
    c = AugmentConfig(crop_scale=(0.2, 1.0), crop_ratio=(0.5, 2.0), flip_p=0.5, jitter_p=0.8, brightness=0.4,
                      gray_p=0.2, solarize_p=0.1, noise_std=0.1)
    assert at_strength(c, 1.0) == c
    zero = at_strength(c, 0.0)
    assert zero.crop_scale == (1.0, 1.0) and zero.crop_ratio == (1.0, 1.0)
    assert (zero.flip_p, zero.jitter_p, zero.gray_p, zero.solarize_p, zero.noise_std) == (0, 0, 0, 0, 0)
    half = at_strength(c, 0.5)
    assert half.crop_scale == pytest.approx((0.6, 1.0)) and half.crop_ratio == pytest.approx((0.75, 1.5))
    assert half.flip_p == 0.25 and half.brightness == pytest.approx(0.2) and half.noise_std == pytest.approx(0.05)
    x = torch.rand(8, 3, 12, 12, generator=gen(1))
    assert torch.equal(BatchAugment(zero)(x, gen(2)), x)       # strength 0 leaves the images alone


def test_region_mix_pastes_one_box_from_the_neighbouring_image_and_erasing_fills_one_with_noise():
    # image i is the constant i/10: every changed pixel shows where it came from
    x = torch.arange(8, dtype=torch.float32).div(10).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    mixed = BatchAugment(cfg(mix_p=1.0, box_scale=(0.25, 0.25)))(x, gen(0))
    for i in range(8):
        changed = (mixed[i] != x[i]).any(0)
        assert changed.sum().item() == 64                          # an 8x8 box: a quarter of the area
        rows, cols = changed.nonzero().T
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        assert torch.all(mixed[i][:, changed] == x[i - 1, 0, 0, 0])  # from the previous image of the batch
    erased = BatchAugment(cfg(erase_p=1.0, box_scale=(0.25, 0.25)))(x, gen(0))
    changed = erased != x
    assert changed.flatten(1).sum(1).eq(3 * 64).all() and 0.4 < erased[changed].mean().item() < 0.6  # uniform
    assert torch.equal(BatchAugment(cfg(mix_p=1e-9, erase_p=1e-9))(x, gen(0)), x)   # drawn but not applied
    # switched on, the other ops' draws stay what they were: outside its box each view is unchanged
    from dataclasses import replace
    photos = torch.rand(8, 3, 16, 16, generator=gen(4))
    plain = BatchAugment(simclr_cfg())(photos, gen(3))
    boxed = BatchAugment(replace(simclr_cfg(), mix_p=1.0))(photos, gen(3))
    differs = (plain != boxed).any(1).flatten(1).sum(1)
    assert (differs > 0).all() and (differs <= 0.33 * 256 + 16).all()
    with pytest.raises(ValueError, match="box_scale"):
        BatchAugment(cfg(box_scale=(0.5, 1.5)))


def test_low_resolution_view_is_the_image_downsampled_and_resized_back():
    x = torch.rand(6, 3, 16, 16, generator=gen(5))
    low = BatchAugment(cfg(lowres_p=1.0, lowres_scale=(0.5, 0.5)))(x, gen(0))
    expected = F.interpolate(F.interpolate(x, size=(8, 8), mode="area"), size=(16, 16), mode="bilinear",
                             align_corners=False)
    assert torch.allclose(low, expected, atol=1e-6)
    # a 2x2-constant image survives the round trip except at the bilinear resize's borders
    blocks = torch.rand(2, 3, 8, 8, generator=gen(6)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    again = BatchAugment(cfg(lowres_p=1.0, lowres_scale=(0.5, 0.5)))(blocks, gen(0))
    assert (again - blocks).abs().mean() < (low - x).abs().mean()
    assert torch.equal(BatchAugment(cfg(lowres_p=1e-9))(x, gen(0)), x)
    with pytest.raises(ValueError, match="lowres_scale"):
        BatchAugment(cfg(lowres_scale=(0.5, 2.0)))
