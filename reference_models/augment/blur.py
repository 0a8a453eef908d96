"""Gaussian blur of N x C x H x W batches with a per-sample sigma, as one grouped separable convolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(y: torch.Tensor, sigma: torch.Tensor, chosen: torch.Tensor, kernel: int) -> torch.Tensor:
    """Samples where `chosen` (N,) is true blurred with their own `sigma` (N,) over a `kernel`-wide window
    (odd; narrowed on images too small for it), reflect-padded at the borders; the others left as they are."""
    n, ch, hh, ww = y.shape
    # Reflect padding needs the radius to be smaller than the image side.
    r = min(kernel // 2, hh - 1, ww - 1)
    if r <= 0:
        return y
    offs = torch.arange(-r, r + 1, device=y.device, dtype=y.dtype)
    k = torch.exp(-(offs**2) / (2.0 * sigma.view(n, 1) ** 2))
    k = k / k.sum(1, keepdim=True)
    # Samples that are not blurred get a delta kernel: an exact no-op that keeps the
    # batch a single grouped conv (no gather/scatter, no host sync on GPU).
    delta = (offs == 0).to(y.dtype).expand(n, 2 * r + 1)
    k = torch.where(chosen.view(n, 1), k, delta)
    k = k.repeat_interleave(ch, dim=0)  # one kernel per (sample, channel) group
    g = n * ch
    # Reflect-pad both axes once; 2-D reflection is separable, so the two 1-D passes see
    # exactly the per-axis reflected borders.
    z = F.pad(y.reshape(1, g, hh, ww), (r, r, r, r), mode="reflect")
    z = F.conv2d(z, k.view(g, 1, 1, 2 * r + 1), groups=g)
    z = F.conv2d(z, k.view(g, 1, 2 * r + 1, 1), groups=g)
    return z.view(n, ch, hh, ww)
