"""AugmentConfig, the settings of BatchAugment: their checks, the identity and a config scaled towards it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ..fields import FieldError, bounded, pair, validate


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
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
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
