"""Colour ops on N x C x H x W batches in [0, 1] with per-sample parameters: jitter, greyscale, solarize."""
from __future__ import annotations

import math

import torch

# Conventions: brightness multiplies (PIL / torchvision convention), contrast blends with the per-image
# mean luma, saturation blends with the per-pixel luma. Hue is a rotation of the chroma (I, Q) plane in
# YIQ space by 2*pi*h, with h a fraction of the hue circle as in torchvision's `hue` argument: a linear
# 3x3 map, much cheaper than an RGB->HSV round trip. It preserves luma and leaves grey pixels unchanged,
# but it is not identical to an HSV hue shift for saturated colours.

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)

# RGB -> YIQ (NTSC). Only used to derive the hue-rotation matrices below.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)


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


def constants(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The small tensors the colour ops read (luma weights, hue basis, identity), on device and dtype."""
    return {
        "luma": torch.tensor(_LUMA, device=device, dtype=dtype),
        "hue_a": _HUE_A.to(device=device, dtype=dtype),
        "hue_b": _HUE_B.to(device=device, dtype=dtype),
        "eye": torch.eye(3, device=device, dtype=dtype),
    }


def spare_for(y: torch.Tensor, spare: list) -> torch.Tensor:
    """The per-call scratch tensor shaped like y (allocated on first use)."""
    if not spare:
        spare.append(torch.empty_like(y, memory_format=torch.contiguous_format))
    return spare[0]


def mix(m: torch.Tensor, y: torch.Tensor, spare: list, clamp: bool = True) -> torch.Tensor:
    """Per-sample 3x3 colour matrix applied to every pixel, then (optionally) clamp.

    bmm cannot work in place, so it writes into the spare buffer and y becomes the new spare.
    """
    n, ch, hh, ww = y.shape
    out = spare_for(y, spare)
    torch.bmm(m, y.view(n, ch, hh * ww), out=out.view(n, ch, hh * ww))
    spare[0] = y
    return out.clamp_(0.0, 1.0) if clamp else out


def jitter(y: torch.Tensor, brightness: torch.Tensor | None, contrast: torch.Tensor | None,
           saturation: torch.Tensor | None, hue: torch.Tensor | None, c: dict[str, torch.Tensor],
           spare: list) -> torch.Tensor:
    """Per-sample factors (N,) for brightness, contrast, saturation and a hue shift (a fraction of the
    circle), each None to skip; applied in that fixed order, clamped to [0, 1] after each. Saturation and
    hue need RGB and are skipped for other channel counts. Neutral factors (1, 1, 1, 0) are exact no-ops
    on [0, 1] data, so callers leave a sample unchanged that way rather than with a separate select pass."""
    n, ch = y.shape[0], y.shape[1]
    if brightness is not None:
        y.mul_(brightness.view(n, 1, 1, 1)).clamp_(0.0, 1.0)
    if contrast is not None:
        k = contrast
        # Mean luma of the image = luma of the per-channel means (both are linear).
        means = y.mean(dim=(2, 3))
        mean = means @ c["luma"] if ch == 3 else means.mean(1)
        bias = ((1.0 - k) * mean).view(n, 1, 1, 1)
        y.mul_(k.view(n, 1, 1, 1)).add_(bias).clamp_(0.0, 1.0)
    if ch != 3:
        return y
    if saturation is not None:
        s = saturation
        # Blend with per-pixel luma as one 3x3 matrix per sample: s*I + (1-s) * 1 w^T.
        m = s.view(n, 1, 1) * c["eye"] + (1.0 - s).view(n, 1, 1) * c["luma"].expand(3, 3)
        y = mix(m, y, spare)
    if hue is not None:
        ang = (2.0 * math.pi) * hue
        m = c["eye"] + (torch.cos(ang) - 1.0).view(n, 1, 1) * c["hue_a"] + torch.sin(ang).view(n, 1, 1) * c["hue_b"]
        y = mix(m, y, spare)
    return y


def grayscale(y: torch.Tensor, chosen: torch.Tensor, c: dict[str, torch.Tensor], spare: list) -> torch.Tensor:
    """RGB samples where `chosen` (N,) is true replaced by their luma on all three channels."""
    # Per-sample 3x3 matrix: every row the luma weights (gray) or the identity (keep). One bmm
    # is cheaper than computing luma and selecting, and the identity rows reproduce y exactly.
    m = torch.where(chosen.view(y.shape[0], 1, 1), c["luma"].expand(3, 3), c["eye"])
    return mix(m, y, spare, clamp=False)  # a convex mix of [0, 1] values needs no clamp


def solarize(y: torch.Tensor, threshold: torch.Tensor, spare: list) -> torch.Tensor:
    """Pixels at or above the sample's threshold (N,) inverted to 1 - v, in place in y."""
    flipped = torch.neg(y, out=spare_for(y, spare)).add_(1.0)
    return torch.where(y >= threshold.view(y.shape[0], 1, 1, 1), flipped, y, out=y)
