"""Geometric ops on N x C x H x W batches: resized crop and flip, boxes, shifts, block shuffles, resolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Samples where `flip` (N,) is true mirrored left to right; an exact index reversal, no interpolation."""
    return torch.where(flip.view(x.shape[0], 1, 1, 1), x.flip(-1), x)


def resized_crop(x: torch.Tensor, area: torch.Tensor, ratio: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                 flip: torch.Tensor) -> torch.Tensor:
    """Per sample (all (N,)), a crop of `area` (a fraction of the image) and aspect `ratio` (width / height),
    placed at `cx`, `cy` in [0, 1] across the room the crop leaves, mirrored where `flip`, resized back to
    the image's size (bilinear)."""
    # Width / height as fractions of the image side. Clamping (instead of torchvision's
    # rejection loop) keeps this branch-free; it only bites for extreme scale/ratio combos.
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    # In normalised coordinates the image spans [-1, 1] and the crop's half-extent is w,
    # so a centre in [-(1 - w), 1 - w] keeps the crop inside the image.
    cx = (2.0 * cx - 1.0) * (1.0 - w)
    cy = (2.0 * cy - 1.0) * (1.0 - h)
    sx = torch.where(flip, -w, w)  # mirroring output x is a negative x scale
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def box_mask(side: torch.Tensor, top: torch.Tensor, left: torch.Tensor, chosen: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x H x W mask of one box per sample: its side a fraction `side` of each image side, placed at
    `top`, `left` in [0, 1] across the room it leaves; all false where `chosen` (N,) is false."""
    n, (hh, ww) = side.shape[0], size
    rows = torch.arange(hh, device=side.device, dtype=side.dtype).view(1, hh, 1)
    cols = torch.arange(ww, device=side.device, dtype=side.dtype).view(1, 1, ww)
    top = top * (1.0 - side) * hh
    left = left * (1.0 - side) * ww
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + side * hh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + side * ww).view(n, 1, 1)))
    return (inside & chosen.view(n, 1, 1)).unsqueeze(1)


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
