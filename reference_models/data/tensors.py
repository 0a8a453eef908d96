"""Tensor helpers shared by the loaders: resizing, channel replication, statistics."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Resize in chunks so a 50k-image set never needs one giant float copy.
_CHUNK = 2048


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 N x C x H x W to size x size (bilinear; antialias only when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    # Antialiasing only matters when downscaling; for upscaling it would be a no-op cost.
    antialias = size < max(x.shape[-2], x.shape[-1])
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], _CHUNK):
        chunk = x[i : i + _CHUNK].float()
        y = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        out[i : i + _CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Replicate a single channel to three so every model sees C=3."""
    if x.shape[1] == 3:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of x / 255, summed in float64 per chunk to stay accurate and small."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], _CHUNK):
        chunk = x[i : i + _CHUNK].float()
        total += chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
        total_sq += (chunk * chunk).sum(dim=(0, 2, 3), dtype=torch.float64)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    total /= 255.0
    total_sq /= 255.0**2
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    # Guard constant channels so normalising never divides by zero.
    std = std.clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]
