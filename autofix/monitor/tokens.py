"""Transformer health from tokens and attention maps: whether the patch tokens of one image still
differ from each other, and whether self-attention still selects. Pure functions of a ViT's final
tokens (N, T, D) and its attention probabilities (N, H, T, T); non-finite input gives NaN.

The catalog's token-level entries (uniform or static attention maps, heads that all learn the same
pattern, all patch tokens of an image collapsing to one vector) describe these quantities."""
from __future__ import annotations

import torch

from reference_models.backbones.vit import attention_probs  # noqa: F401 - the block's own maps, re-exported
from reference_models.regularizers import attention_entropy as _entropy
from reference_models.regularizers import mean_pair_cosine

NAN = float("nan")


def _finite(t: torch.Tensor) -> bool:
    return t.numel() > 0 and bool(torch.isfinite(t).all())


def token_similarity(tokens: torch.Tensor) -> float:
    """Mean cosine between two different tokens of the same image, averaged over images. 1 when every
    token of an image is the same vector (token collapse, over-smoothing); near 0 for unrelated tokens."""
    if tokens.dim() != 3 or tokens.shape[1] < 2 or not _finite(tokens):
        return NAN
    return mean_pair_cosine(tokens.detach().double()).item()


def attention_entropy(attn: torch.Tensor) -> float:
    """Mean entropy of the attention rows over log(T): 1 when every query attends uniformly to all T
    keys (attention that selects nothing), 0 when each attends to a single key."""
    if attn.dim() != 4 or attn.shape[-1] < 2 or not _finite(attn):
        return NAN
    return _entropy(attn.detach().double()).item()


def attention_max(attn: torch.Tensor) -> float:
    """Mean over queries of the largest attention weight: near 1 when all attention goes to one key
    (degenerate all-to-one maps), 1/T when uniform."""
    if attn.dim() != 4 or not _finite(attn):
        return NAN
    return attn.detach().double().amax(dim=-1).mean().item()


def head_redundancy(attn: torch.Tensor) -> float:
    """Mean cosine between the attention maps of two different heads for the same image (maps
    flattened): 1 when all heads attend alike, lower when they specialise. NaN with a single head."""
    if attn.dim() != 4 or attn.shape[1] < 2 or not _finite(attn):
        return NAN
    return mean_pair_cosine(attn.detach().double().flatten(2)).item()


def attention_static_share(attn: torch.Tensor) -> float:
    """Share of the attention maps' energy (N images, H heads, T x T; uniform attention subtracted) that
    the images have in common: the mean map's squared norm over the mean squared norm of each image's
    map. 1 when every image gets the same maps (attention set by position alone, whatever the content),
    near 1/N when the maps of different images are unrelated. NaN for uniform maps, which carry no
    pattern to share, or for a single image."""
    if attn.dim() != 4 or attn.shape[0] < 2 or not _finite(attn):
        return NAN
    a = attn.detach().double()
    centred = a - 1.0 / a.shape[-1]
    total = centred.pow(2).sum(dim=(1, 2, 3)).mean()
    shared = centred.mean(dim=0).pow(2).sum()
    return (shared / total).item() if total > 1e-12 else NAN


def position_share(tokens: torch.Tensor) -> float:
    """Share of the patch tokens' variance (N images, T positions, D) explained by position: the spread of
    each position's mean token over images, over the spread of all tokens. Measured on images whose
    patches were shuffled, so content is independent of position: then 0 means the tokens carry no
    position at all (a permutation-equivariant transformer), 1 that they carry nothing else."""
    if tokens.dim() != 3 or tokens.shape[0] < 2 or not _finite(tokens):
        return NAN
    t = tokens.detach().double()
    centred = t - t.mean(dim=(0, 1))
    total = centred.pow(2).sum(-1).mean()
    explained = centred.mean(dim=0).pow(2).sum(-1).mean()
    return (explained / total).item() if total > 0 else NAN


def position_decodability(tokens: torch.Tensor, ridge: float = 1e-3) -> float:
    """How well a linear read-out tells each patch token's position (N images, T positions, D): a ridge
    regression onto the one-hot position fitted on the first half of the images, its accuracy on the
    second half. About 1/T when the tokens carry no position (a transformer without positional
    embedding, on shuffled patches), near 1 when position can be read off however loud the content is."""
    if tokens.dim() != 3 or tokens.shape[0] < 4 or not _finite(tokens):
        return NAN
    t = tokens.detach().double()
    n, positions, d = t.shape
    half = n // 2
    fit, held = t[:half].reshape(-1, d), t[half:].reshape(-1, d)
    mean, scale = fit.mean(0), fit.std(0).clamp_min(1e-12)
    fit, held = (fit - mean) / scale, (held - mean) / scale
    target = torch.eye(positions, dtype=t.dtype).repeat(half, 1)
    w = torch.linalg.solve(fit.T @ fit + ridge * len(fit) * torch.eye(d, dtype=t.dtype), fit.T @ target)
    truth = torch.arange(positions).repeat(n - half)
    return ((held @ w).argmax(dim=1) == truth).double().mean().item()
