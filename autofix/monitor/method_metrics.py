"""Method-specific signals: how a contrastive loss spreads its weight over negatives (SimCLR), how far
an online network is from its momentum target (BYOL), and the interpolation baseline an MAE must
beat. Non-finite input gives NaN."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from reference_models.losses import masked_reconstruction, patchify

from .optimization import distance_sq, norm_sq, to_floats

NAN = float("nan")
NORM_PIX_EPS = 1e-6  # the eps of masked_reconstruction, so neighbours are normalised like targets


def contrastive_entropy(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Entropy of the softmax over the 2N-2 negatives of each of the 2N views (logits = cosine /
    temperature, as in NT-Xent, Chen et al. 2020), averaged and divided by log(2N-2). 1 = negatives
    weighted uniformly (temperature too high, no hard negatives); near 0 = one negative dominates."""
    a, b = z1.detach(), z2.detach()
    if a.shape != b.shape or a.shape[0] < 2 or not bool(torch.isfinite(a).all() & torch.isfinite(b).all()):
        return NAN
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]).reshape(2 * n, -1).double(), dim=1)
    logits = z @ z.T / temperature
    idx = torch.arange(2 * n, device=z.device)
    excluded = torch.zeros_like(logits, dtype=torch.bool)
    excluded[idx, idx] = True                   # the view itself
    excluded[idx, (idx + n) % (2 * n)] = True   # its positive twin
    logp = logits.masked_fill(excluded, -math.inf).log_softmax(dim=1)
    # 0 * log 0 is 0 for the excluded entries, not NaN
    plogp = torch.where(excluded, torch.zeros_like(logp), logp.exp() * logp)
    entropy = -plogp.sum(dim=1)
    return (entropy.mean() / math.log(2 * n - 2)).item()


def ema_param_distance(online_params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor]) -> float:
    """||online - target|| / ||target||, all tensors as one vector. Near 0 means the target just copies
    the online network (momentum too low: BYOL's collapse-prone regime, Grill et al. 2020); steadily
    growing means the target lags too far behind."""
    online, target = list(online_params), list(target_params)
    if len(online) != len(target):
        raise ValueError(f"online and target parameter lists differ in length: {len(online)} vs {len(target)}")
    if not online:
        return NAN
    # summed on the device and read once: one .item() per tensor would wait on a GPU 2 x 70 times
    diff, base = to_floats([distance_sq(online, target), norm_sq(target)])
    if not (math.isfinite(diff) and math.isfinite(base)):
        return NAN
    if base == 0:
        return NAN if diff == 0 else math.inf
    return math.sqrt(diff / base)


def _shift_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the four grid neighbours of every cell; x is (B, gh, gw, ...), outside the grid is 0."""
    out = torch.zeros_like(x)
    out[:, 1:] += x[:, :-1]
    out[:, :-1] += x[:, 1:]
    out[:, :, 1:] += x[:, :, :-1]
    out[:, :, :-1] += x[:, :, 1:]
    return out


def neighbour_interpolation_loss(images: torch.Tensor, patch_size: int, mask: torch.Tensor,
                                 norm_pix: bool = True) -> float:
    """MAE baseline (He et al. 2022 loss): predict each masked patch as the mean of its visible
    4-neighbour patches (the image's mean visible patch where no neighbour is visible; zeros where no
    patch is visible), scored with masked_reconstruction. An MAE whose loss is not below this has
    learned nothing beyond interpolation. With norm_pix the neighbours are normalised per patch the
    same way as the target, so prediction and target live in the same space."""
    images = images.detach()
    if not bool(torch.isfinite(images).all()):
        return NAN
    b, _, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    patches = patchify(images.double(), patch_size)                   # (B, N, P), raw pixels
    source = patches
    if norm_pix:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        source = (patches - mean) / (var + NORM_PIX_EPS).sqrt()
    mask = mask.detach().to(patches.dtype).reshape(b, gh * gw)
    visible = 1.0 - mask
    grid = (source * visible[..., None]).reshape(b, gh, gw, -1)
    n_near = _shift_sum(visible.reshape(b, gh, gw)).reshape(b, gh * gw, 1)
    near = _shift_sum(grid).reshape(b, gh * gw, -1)
    n_vis = visible.sum(dim=1).reshape(b, 1, 1)
    image_mean = (source * visible[..., None]).sum(dim=1, keepdim=True) / n_vis.clamp_min(1.0)
    pred = torch.where(n_near > 0, near / n_near.clamp_min(1.0), image_mean.expand_as(near))
    return masked_reconstruction(pred, patches, mask, norm_pix=norm_pix).item()
