"""Batched, on-device image augmentations for self-supervised views (SimCLR / BYOL / VICReg).

Every op works on the whole batch at once with per-sample random parameters; there is no
Python loop over samples. All randomness comes from a single ``torch.rand`` call on the
caller's generator, so a fixed seed reproduces the same views exactly.

Pipeline order (as in SimCLR): resized crop + horizontal flip -> colour jitter -> grayscale
-> Gaussian blur -> solarize, then (off by default) pixel noise, a box pasted from another image of
the batch (CutMix without labels), a box erased to noise (random erasing / cutout) and a lower
resolution (downsampled and resized back). Ops whose probability (or strength) is zero are skipped
outright, so the identity config costs little more than a copy.

Conventions worth knowing:
  * brightness multiplies (PIL / torchvision convention), contrast blends with the per-image
    mean luma, saturation blends with the per-pixel luma.
  * hue is a rotation of the chroma (I, Q) plane in YIQ space by 2*pi*h, with h a fraction of
    the hue circle as in torchvision's ``hue`` argument. It is a linear 3x3 map, so it is much
    cheaper than an RGB->HSV round trip; it preserves luma and leaves grey pixels unchanged, but
    it is not identical to an HSV hue shift for saturated colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .fields import FieldError, bounded, pair, validate

__all__ = ["AugmentConfig", "BatchAugment", "at_strength", "check_config", "identity_config"]

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)

# RGB -> YIQ (NTSC). Only used to derive the hue-rotation matrices below.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)

# Column indices into the single block of uniforms drawn per call. The block always has the
# same width whatever ops are enabled, so a given (config, seed) pair always gives the same views.
_U_SCALE, _U_RATIO, _U_CX, _U_CY, _U_FLIP = 0, 1, 2, 3, 4
_U_JIT, _U_BRI, _U_CON, _U_SAT, _U_HUE = 5, 6, 7, 8, 9
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOL = 10, 11, 12, 13
_N_UNIFORMS = 14


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = pair((0.2, 1.0))  # random resized crop area fraction
    crop_ratio: tuple[float, float] = pair((3 / 4, 4 / 3))  # aspect ratio range (log-uniform)
    flip_p: float = bounded(0.5, 0.0, 1.0)  # horizontal flip
    jitter_p: float = bounded(0.8, 0.0, 1.0)  # probability colour jitter is applied
    brightness: float = bounded(0.4, 0.0)
    contrast: float = bounded(0.4, 0.0)
    saturation: float = bounded(0.4, 0.0)
    hue: float = bounded(0.1, 0.0, 0.5)  # a fraction of the hue circle
    gray_p: float = bounded(0.2, 0.0, 1.0)
    blur_p: float = bounded(0.0, 0.0, 1.0)
    blur_sigma: tuple[float, float] = pair((0.1, 2.0))
    blur_kernel: int = bounded(3, 1, 31)  # odd; sigma is drawn per sample
    solarize_p: float = bounded(0.0, 0.0, 1.0)
    solarize_threshold: float = bounded(0.5, 0.0, 1.0)
    noise_std: float = bounded(0.0, 0.0, 1.0)  # additive Gaussian pixel noise on every view, clipped to [0, 1]
    mix_p: float = bounded(0.0, 0.0, 1.0)  # paste a box from another image of the batch (CutMix, no labels)
    erase_p: float = bounded(0.0, 0.0, 1.0)  # overwrite a box with uniform noise (random erasing / cutout)
    box_scale: tuple[float, float] = pair((0.1, 0.33))  # the box's area fraction, for mix and erase
    lowres_p: float = bounded(0.0, 0.0, 1.0)  # shown at a lower resolution: downsampled, then resized back
    lowres_scale: tuple[float, float] = pair((0.25, 0.5))  # the side's fraction it is downsampled to (one per batch)
    second_view_strength: float = bounded(1.0, 0.0, 1.0)  # the second view at this strength of the rest
                                           # (at_strength): 1 = both views alike, lower = a strong/weak pair

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AugmentConfig":
        """Build from a plain mapping (e.g. parsed YAML / OmegaConf), turning lists into tuples."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AugmentConfig keys: {sorted(unknown)}")
        kw = {k: (tuple(float(e) for e in v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}
        return cls(**kw)


def identity_config() -> AugmentConfig:
    """Every op off; the crop covers the whole image. BatchAugment then returns a copy of x."""
    return AugmentConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        gray_p=0.0,
        blur_p=0.0,
        solarize_p=0.0,
    )


def at_strength(cfg: AugmentConfig, strength: float) -> AugmentConfig:
    """`cfg` scaled towards the identity: every probability and magnitude times `strength`, and the crop's
    smallest area and aspect ratios moved from 1 towards their configured values by the same share.
    strength 1 gives `cfg`, 0 the identity: the steps of an augmentation curriculum."""
    a = min(max(float(strength), 0.0), 1.0)
    if a == 1.0:
        return cfg

    def toward(one: float, target: float) -> float:
        return one + a * (target - one)

    lo, hi = cfg.crop_scale
    rlo, rhi = cfg.crop_ratio
    return replace(cfg, crop_scale=(toward(1.0, lo), toward(1.0, hi)), crop_ratio=(toward(1.0, rlo), toward(1.0, rhi)),
                   flip_p=a * cfg.flip_p, jitter_p=a * cfg.jitter_p, brightness=a * cfg.brightness,
                   contrast=a * cfg.contrast, saturation=a * cfg.saturation, hue=a * cfg.hue, gray_p=a * cfg.gray_p,
                   blur_p=a * cfg.blur_p, solarize_p=a * cfg.solarize_p, noise_std=a * cfg.noise_std,
                   mix_p=a * cfg.mix_p, erase_p=a * cfg.erase_p, lowres_p=a * cfg.lowres_p)


def at_resolution(y: torch.Tensor, frac: float) -> torch.Tensor:
    """Images (N, C, H, W) area-downsampled to `frac` of their side and resized back (bilinear): the same
    pictures at a lower resolution, at their own size."""
    hh, ww = y.shape[-2:]
    small = F.interpolate(y, size=(max(2, round(hh * frac)), max(2, round(ww * frac))), mode="area")
    return F.interpolate(small, size=(hh, ww), mode="bilinear", align_corners=False)


def shifted(y: torch.Tensor, frac: float) -> torch.Tensor:
    """Images (N, C, H, W) moved right and down by `frac` of their side, the strip uncovered at the top and
    left filled with zeros: the same pictures under a small padding-and-crop shift."""
    hh, ww = y.shape[-2:]
    dy, dx = min(hh - 1, round(hh * frac)), min(ww - 1, round(ww * frac))
    out = torch.zeros_like(y)
    out[..., dy:, dx:] = y[..., :hh - dy, :ww - dx]
    return out


def shuffle_blocks(y: torch.Tensor, grid: int) -> torch.Tensor:
    """Images (N, C, H, W) cut into grid x grid blocks, each image's blocks put back in a random order of
    its own (a jigsaw without the puzzle): the same content at other positions. H and W divisible by grid."""
    n, c, hh, ww = y.shape
    bh, bw = hh // grid, ww // grid
    blocks = y.reshape(n, c, grid, bh, grid, bw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, bh, bw)
    order = torch.rand(n, grid * grid, device=y.device).argsort(dim=1)
    blocks = blocks.gather(1, order[:, :, None, None, None].expand_as(blocks))
    return blocks.reshape(n, grid, grid, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, hh, ww)


def _hue_basis() -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices A, B with hue_rotation(theta) = I + (cos(theta) - 1) * A + sin(theta) * B.

    Written this way (rather than T^-1 R(theta) T) so theta = 0 gives exactly the identity,
    which keeps non-jittered samples bit-identical without an extra select pass.
    """
    t = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    t_inv = torch.linalg.inv(t)
    keep_iq = torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    # Sign chosen so that positive h moves red towards green, the same direction as an HSV hue increase.
    quarter = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    return (t_inv @ keep_iq @ t).float(), (t_inv @ quarter @ t).float()


_HUE_A, _HUE_B = _hue_basis()


class BatchAugment(torch.nn.Module):
    """Random per-sample augmentation of an N x C x H x W batch in [0, 1]."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        lo, hi = cfg.crop_scale
        rlo, rhi = cfg.crop_ratio
        # A crop with scale (1, 1) and ratio (1, 1) is the identity warp; skip grid_sample then.
        self._crop_trivial = lo >= 1.0 and hi >= 1.0 and rlo == 1.0 and rhi == 1.0
        self._do_jitter = cfg.jitter_p > 0 and (cfg.brightness > 0 or cfg.contrast > 0 or cfg.saturation > 0 or cfg.hue > 0)
        self._do_gray = cfg.gray_p > 0
        self._do_blur = cfg.blur_p > 0 and cfg.blur_kernel > 1
        self._do_solarize = cfg.solarize_p > 0
        self._any = (
            not self._crop_trivial or cfg.flip_p > 0 or self._do_jitter or self._do_gray or self._do_blur or self._do_solarize
            or cfg.noise_std > 0 or cfg.mix_p > 0 or cfg.erase_p > 0 or cfg.lowres_p > 0
        )
        # Small constants cached per (device, dtype) so GPU calls don't re-upload them every step.
        self._consts: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return repr(self.cfg)

    def _c(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (device, dtype)
        c = self._consts.get(key)
        if c is None:
            c = {
                "luma": torch.tensor(_LUMA, device=device, dtype=dtype),
                "hue_a": _HUE_A.to(device=device, dtype=dtype),
                "hue_b": _HUE_B.to(device=device, dtype=dtype),
                "eye": torch.eye(3, device=device, dtype=dtype),
            }
            self._consts[key] = c
        return c

    @torch.no_grad()  # augmentation is not differentiated; this also lets the out= / in-place ops below run on inputs that require grad
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: float N x C x H x W in [0, 1] on any device (C = 3, or 1 where colour ops that need 3 channels
        are skipped). Returns a new tensor of the same shape/dtype/device in [0, 1]. Every random draw uses
        `generator` when given (a torch.Generator on x.device), so views are reproducible."""
        if x.dim() != 4:
            raise ValueError(f"expected N x C x H x W, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating point image, got {x.dtype}")
        if not self._any or x.shape[0] == 0:
            return x.clone()

        in_dtype = x.dtype
        # Half precision lacks some CPU kernels (grid_sample, conv) and loses accuracy in the
        # blends, so compute in float32 and cast back once at the end.
        work_dtype = in_dtype if in_dtype in (torch.float32, torch.float64) else torch.float32
        n, ch = x.shape[0], x.shape[1]
        cfg = self.cfg
        c = self._c(x.device, work_dtype)

        # One RNG call for everything: cheaper than many small draws, and it fixes the stream layout.
        u = torch.rand(n, _N_UNIFORMS, generator=generator, device=x.device, dtype=work_dtype)

        # y is always a fresh contiguous tensor, so everything below may work in place. Fresh
        # full-size allocations are surprisingly costly on CPU (page faults on every call), so
        # later steps write into y or into one reusable spare buffer instead of allocating.
        y = self._crop_flip(x.to(work_dtype), u).contiguous()
        spare: list[torch.Tensor] = []
        if self._do_jitter:
            y = self._jitter(y, u, c, spare)
        if self._do_gray and ch == 3:
            y = self._grayscale(y, u, c, spare)
        if self._do_blur:
            y = self._blur(y, u)
        if self._do_solarize:
            # Unselected samples get an infinite threshold: one broadcast compare, no extra mask pass.
            thr = torch.full_like(u[:, _U_SOL], cfg.solarize_threshold)
            thr = torch.where(u[:, _U_SOL] < cfg.solarize_p, thr, torch.full_like(thr, math.inf))
            flipped = torch.neg(y, out=_spare_for(y, spare)).add_(1.0)
            torch.where(y >= thr.view(n, 1, 1, 1), flipped, y, out=y)
        if cfg.noise_std > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y.add_(noise, alpha=cfg.noise_std).clamp_(0.0, 1.0)
        if cfg.mix_p > 0 or cfg.erase_p > 0:
            y = self._boxes(y, generator)
        if cfg.lowres_p > 0:
            y = self._low_resolution(y, generator)
        return y.to(in_dtype)

    def _low_resolution(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """With lowres_p, a sample is area-downsampled to a fraction of its side (one fraction per call, from
        lowres_scale) and resized back: the same picture at a lower resolution (resolution jitter)."""
        n, _, hh, ww = y.shape
        u = torch.rand(n + 1, generator=generator, device=y.device, dtype=torch.float32).cpu()
        lo, hi = self.cfg.lowres_scale
        frac = lo + (hi - lo) * float(u[0])
        chosen = (u[1:] < self.cfg.lowres_p).to(y.device)
        return torch.where(chosen.view(n, 1, 1, 1), at_resolution(y, frac), y)

    def _boxes(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per sample, with mix_p a square box taken from the next image of the (shuffled) batch, then with
        erase_p another box filled with uniform noise. Drawn apart from the main block of uniforms, so
        turning these on leaves every other op's draws as they were."""
        cfg, (n, _, hh, ww) = self.cfg, y.shape
        u = torch.rand(n, 2, 4, generator=generator, device=y.device, dtype=y.dtype)
        rows = torch.arange(hh, device=y.device, dtype=y.dtype).view(1, hh, 1)
        cols = torch.arange(ww, device=y.device, dtype=y.dtype).view(1, 1, ww)

        def box(k: int, p: float) -> torch.Tensor:
            lo, hi = cfg.box_scale
            side = torch.sqrt(lo + (hi - lo) * u[:, k, 0])      # a fraction of each image side
            top = u[:, k, 1] * (1.0 - side) * hh
            left = u[:, k, 2] * (1.0 - side) * ww
            inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + side * hh).view(n, 1, 1))
                      & (cols >= left.view(n, 1, 1)) & (cols < (left + side * ww).view(n, 1, 1)))
            return (inside & (u[:, k, 3] < p).view(n, 1, 1)).unsqueeze(1)

        if cfg.mix_p > 0:
            y = torch.where(box(0, cfg.mix_p), y.roll(1, dims=0), y)
        if cfg.erase_p > 0:
            noise = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = torch.where(box(1, cfg.erase_p), noise, y)
        return y

    # -- geometry ---------------------------------------------------------------------------

    def _crop_flip(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        n = x.shape[0]
        flip = u[:, _U_FLIP] < cfg.flip_p
        if self._crop_trivial:
            if cfg.flip_p <= 0:
                return x.clone()
            # A pure flip is an exact index reversal; no need to interpolate.
            return torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)

        lo, hi = cfg.crop_scale
        rlo, rhi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        area = lo + (hi - lo) * u[:, _U_SCALE]
        ratio = torch.exp(rlo + (rhi - rlo) * u[:, _U_RATIO])
        # Width / height as fractions of the image side. Clamping (instead of torchvision's
        # rejection loop) keeps this branch-free; it only bites for extreme scale/ratio combos.
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        # In normalised coordinates the image spans [-1, 1] and the crop's half-extent is w,
        # so a centre in [-(1 - w), 1 - w] keeps the crop inside the image.
        cx = (2.0 * u[:, _U_CX] - 1.0) * (1.0 - w)
        cy = (2.0 * u[:, _U_CY] - 1.0) * (1.0 - h)
        sx = torch.where(flip, -w, w)  # mirroring output x is a negative x scale
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # -- colour -----------------------------------------------------------------------------

    def _jitter(self, y: torch.Tensor, u: torch.Tensor, c: dict[str, torch.Tensor], spare: list) -> torch.Tensor:
        """Fixed order: brightness, contrast, saturation, hue; clamp to [0, 1] after each.

        Samples that skip jitter get neutral factors (1, 1, 1, 0), which make every step an exact
        no-op on [0, 1] data, so there is no separate select pass.
        """
        cfg = self.cfg
        n, ch = y.shape[0], y.shape[1]
        apply = u[:, _U_JIT] < cfg.jitter_p

        def factor(col: int, strength: float) -> torch.Tensor:
            lo = max(0.0, 1.0 - strength)
            f = lo + (1.0 + strength - lo) * u[:, col]
            return torch.where(apply, f, torch.ones_like(f))

        if cfg.brightness > 0:
            b = factor(_U_BRI, cfg.brightness)
            y.mul_(b.view(n, 1, 1, 1)).clamp_(0.0, 1.0)
        if cfg.contrast > 0:
            k = factor(_U_CON, cfg.contrast)
            # Mean luma of the image = luma of the per-channel means (both are linear).
            means = y.mean(dim=(2, 3))
            mean = means @ c["luma"] if ch == 3 else means.mean(1)
            bias = ((1.0 - k) * mean).view(n, 1, 1, 1)
            y.mul_(k.view(n, 1, 1, 1)).add_(bias).clamp_(0.0, 1.0)
        if ch != 3:
            return y  # saturation and hue need RGB
        if cfg.saturation > 0:
            s = factor(_U_SAT, cfg.saturation)
            # Blend with per-pixel luma as one 3x3 matrix per sample: s*I + (1-s) * 1 w^T.
            m = s.view(n, 1, 1) * c["eye"] + (1.0 - s).view(n, 1, 1) * c["luma"].expand(3, 3)
            y = self._mix(m, y, spare)
        if cfg.hue > 0:
            hshift = (2.0 * u[:, _U_HUE] - 1.0) * cfg.hue
            hshift = torch.where(apply, hshift, torch.zeros_like(hshift))
            ang = (2.0 * math.pi) * hshift
            m = c["eye"] + (torch.cos(ang) - 1.0).view(n, 1, 1) * c["hue_a"] + torch.sin(ang).view(n, 1, 1) * c["hue_b"]
            y = self._mix(m, y, spare)
        return y

    @staticmethod
    def _mix(m: torch.Tensor, y: torch.Tensor, spare: list, clamp: bool = True) -> torch.Tensor:
        """Per-sample 3x3 colour matrix applied to every pixel, then (optionally) clamp.

        bmm cannot work in place, so it writes into the spare buffer and y becomes the new spare.
        """
        n, ch, hh, ww = y.shape
        out = _spare_for(y, spare)
        torch.bmm(m, y.view(n, ch, hh * ww), out=out.view(n, ch, hh * ww))
        spare[0] = y
        return out.clamp_(0.0, 1.0) if clamp else out

    def _grayscale(self, y: torch.Tensor, u: torch.Tensor, c: dict[str, torch.Tensor], spare: list) -> torch.Tensor:
        # Per-sample 3x3 matrix: every row the luma weights (gray) or the identity (keep). One bmm
        # is cheaper than computing luma and selecting, and the identity rows reproduce y exactly.
        n = y.shape[0]
        mask = (u[:, _U_GRAY] < self.cfg.gray_p).view(n, 1, 1)
        m = torch.where(mask, c["luma"].expand(3, 3), c["eye"])
        return self._mix(m, y, spare, clamp=False)  # a convex mix of [0, 1] values needs no clamp

    def _blur(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        n, ch, hh, ww = y.shape
        # Reflect padding needs the radius to be smaller than the image side.
        r = min(cfg.blur_kernel // 2, hh - 1, ww - 1)
        if r <= 0:
            return y
        lo, hi = cfg.blur_sigma
        sigma = lo + (hi - lo) * u[:, _U_SIGMA]
        offs = torch.arange(-r, r + 1, device=y.device, dtype=y.dtype)
        k = torch.exp(-(offs**2) / (2.0 * sigma.view(n, 1) ** 2))
        k = k / k.sum(1, keepdim=True)
        # Samples that are not blurred get a delta kernel: an exact no-op that keeps the
        # batch a single grouped conv (no gather/scatter, no host sync on GPU).
        delta = (offs == 0).to(y.dtype).expand(n, 2 * r + 1)
        k = torch.where((u[:, _U_BLUR] < cfg.blur_p).view(n, 1), k, delta)
        k = k.repeat_interleave(ch, dim=0)  # one kernel per (sample, channel) group
        g = n * ch
        # Reflect-pad both axes once; 2-D reflection is separable, so the two 1-D passes see
        # exactly the per-axis reflected borders.
        z = F.pad(y.reshape(1, g, hh, ww), (r, r, r, r), mode="reflect")
        z = F.conv2d(z, k.view(g, 1, 1, 2 * r + 1), groups=g)
        z = F.conv2d(z, k.view(g, 1, 2 * r + 1, 1), groups=g)
        return z.view(n, ch, hh, ww)


def _spare_for(y: torch.Tensor, spare: list) -> torch.Tensor:
    """The per-call scratch tensor shaped like y (allocated on first use)."""
    if not spare:
        spare.append(torch.empty_like(y, memory_format=torch.contiguous_format))
    return spare[0]


def check_config(cfg: AugmentConfig, prefix: str = "") -> None:
    """Raise FieldError (a ValueError) naming the first invalid setting."""
    validate(cfg, prefix)  # ranges declared on the fields
    if cfg.lowres_scale[1] > 1:
        raise FieldError(f"{prefix}lowres_scale: the upper end is a fraction of the side, at most 1, got "
                         f"{list(cfg.lowres_scale)}")
    if cfg.box_scale[1] > 1:
        raise FieldError(f"{prefix}box_scale: the upper end is an area fraction, at most 1, got {list(cfg.box_scale)}")
    for name in ("crop_scale", "crop_ratio", "blur_sigma", "box_scale", "lowres_scale"):
        if getattr(cfg, name)[0] <= 0:
            raise FieldError(f"{prefix}{name}: the lower end must be positive, got {list(getattr(cfg, name))}")
    if cfg.blur_kernel % 2 == 0:
        raise FieldError(f"{prefix}blur_kernel must be a positive odd integer, got {cfg.blur_kernel}")
