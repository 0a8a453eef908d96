"""BatchAugment: draws every sample's random parameters from one generator and applies the ops in order."""
from __future__ import annotations

import math

import torch

from .blur import gaussian_blur
from .colour import constants, grayscale, jitter, solarize
from .config import AugmentConfig, check_config
from .geometry import at_resolution, box_mask, hflip, resized_crop

# Column indices into the single block of uniforms drawn per call. The block always has the
# same width whatever ops are enabled, so a given (config, seed) pair always gives the same views.
_U_SCALE, _U_RATIO, _U_CX, _U_CY, _U_FLIP = 0, 1, 2, 3, 4
_U_JIT, _U_BRI, _U_CON, _U_SAT, _U_HUE = 5, 6, 7, 8, 9
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOL = 10, 11, 12, 13
_N_UNIFORMS = 14


class BatchAugment(torch.nn.Module):
    """Random per-sample augmentation of an N x C x H x W batch in [0, 1].

    Pipeline order (as in SimCLR): resized crop + horizontal flip -> colour jitter -> grayscale
    -> Gaussian blur -> solarize, then (off by default) pixel noise, a box pasted from another image of
    the batch (CutMix without labels), a box erased to noise (random erasing / cutout) and a lower
    resolution (downsampled and resized back). Ops whose probability (or strength) is zero are skipped
    outright, so the identity config costs little more than a copy. There is no Python loop over samples.
    """

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
            c = self._consts[key] = constants(device, dtype)
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
            y = grayscale(y, u[:, _U_GRAY] < cfg.gray_p, c, spare)
        if self._do_blur:
            lo, hi = cfg.blur_sigma
            y = gaussian_blur(y, lo + (hi - lo) * u[:, _U_SIGMA], u[:, _U_BLUR] < cfg.blur_p, cfg.blur_kernel)
        if self._do_solarize:
            # Unselected samples get an infinite threshold: one broadcast compare, no extra mask pass.
            thr = torch.full_like(u[:, _U_SOL], cfg.solarize_threshold)
            thr = torch.where(u[:, _U_SOL] < cfg.solarize_p, thr, torch.full_like(thr, math.inf))
            solarize(y, thr, spare)
        if cfg.noise_std > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y.add_(noise, alpha=cfg.noise_std).clamp_(0.0, 1.0)
        if cfg.mix_p > 0 or cfg.erase_p > 0:
            y = self._boxes(y, generator)
        if cfg.lowres_p > 0:
            y = self._low_resolution(y, generator)
        return y.to(in_dtype)

    def _crop_flip(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        flip = u[:, _U_FLIP] < cfg.flip_p
        if self._crop_trivial:
            return x.clone() if cfg.flip_p <= 0 else hflip(x, flip)
        lo, hi = cfg.crop_scale
        rlo, rhi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        area = lo + (hi - lo) * u[:, _U_SCALE]
        ratio = torch.exp(rlo + (rhi - rlo) * u[:, _U_RATIO])  # log-uniform
        return resized_crop(x, area, ratio, u[:, _U_CX], u[:, _U_CY], flip)

    def _jitter(self, y: torch.Tensor, u: torch.Tensor, c: dict[str, torch.Tensor], spare: list) -> torch.Tensor:
        """Samples that skip jitter get neutral factors (1, 1, 1, 0): exact no-ops, so no select pass."""
        cfg = self.cfg
        apply = u[:, _U_JIT] < cfg.jitter_p

        def factor(col: int, strength: float) -> torch.Tensor | None:
            if not strength > 0:  # written so that a NaN strength counts as off
                return None
            lo = max(0.0, 1.0 - strength)
            f = lo + (1.0 + strength - lo) * u[:, col]
            return torch.where(apply, f, torch.ones_like(f))

        hshift = None
        if cfg.hue > 0:
            hshift = (2.0 * u[:, _U_HUE] - 1.0) * cfg.hue
            hshift = torch.where(apply, hshift, torch.zeros_like(hshift))
        return jitter(y, factor(_U_BRI, cfg.brightness), factor(_U_CON, cfg.contrast),
                      factor(_U_SAT, cfg.saturation), hshift, c, spare)

    def _boxes(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per sample, with mix_p a square box taken from the next image of the (shuffled) batch, then with
        erase_p another box filled with uniform noise. Drawn apart from the main block of uniforms, so
        turning these on leaves every other op's draws as they were."""
        cfg, (n, _, hh, ww) = self.cfg, y.shape
        u = torch.rand(n, 2, 4, generator=generator, device=y.device, dtype=y.dtype)

        def box(k: int, p: float) -> torch.Tensor:
            lo, hi = cfg.box_scale
            side = torch.sqrt(lo + (hi - lo) * u[:, k, 0])      # a fraction of each image side
            return box_mask(side, u[:, k, 1], u[:, k, 2], u[:, k, 3] < p, (hh, ww))

        if cfg.mix_p > 0:
            y = torch.where(box(0, cfg.mix_p), y.roll(1, dims=0), y)
        if cfg.erase_p > 0:
            noise = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = torch.where(box(1, cfg.erase_p), noise, y)
        return y

    def _low_resolution(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """With lowres_p, a sample is area-downsampled to a fraction of its side (one fraction per call, from
        lowres_scale) and resized back: the same picture at a lower resolution (resolution jitter)."""
        n = y.shape[0]
        u = torch.rand(n + 1, generator=generator, device=y.device, dtype=torch.float32).cpu()
        lo, hi = self.cfg.lowres_scale
        frac = lo + (hi - lo) * float(u[0])
        chosen = (u[1:] < self.cfg.lowres_p).to(y.device)
        return torch.where(chosen.view(n, 1, 1, 1), at_resolution(y, frac), y)

