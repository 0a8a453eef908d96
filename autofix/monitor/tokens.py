"""Transformer health from tokens and attention maps: whether the patch tokens of one image still
differ from each other, and whether self-attention still selects. Pure functions of a ViT's final
tokens (N, T, D) and its attention probabilities (N, H, T, T); non-finite input gives NaN.

The catalog's token-level entries (uniform or static attention maps, heads that all learn the same
pattern, all patch tokens of an image collapsing to one vector) describe these quantities."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAN = float("nan")


def _finite(t: torch.Tensor) -> bool:
    return t.numel() > 0 and bool(torch.isfinite(t).all())


def token_similarity(tokens: torch.Tensor) -> float:
    """Mean cosine between two different tokens of the same image, averaged over images. 1 when every
    token of an image is the same vector (token collapse, over-smoothing); near 0 for unrelated tokens."""
    if tokens.dim() != 3 or tokens.shape[1] < 2 or not _finite(tokens):
        return NAN
    t = F.normalize(tokens.detach().double(), dim=2)
    k = t.shape[1]
    total = t.sum(dim=1).pow(2).sum(dim=1)             # |sum of unit vectors|^2 = k + sum over pairs i != j
    return ((total - k) / (k * (k - 1))).mean().item()


def attention_entropy(attn: torch.Tensor) -> float:
    """Mean entropy of the attention rows over log(T): 1 when every query attends uniformly to all T
    keys (attention that selects nothing), 0 when each attends to a single key."""
    if attn.dim() != 4 or attn.shape[-1] < 2 or not _finite(attn):
        return NAN
    p = attn.detach().double()
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return (h.mean() / math.log(attn.shape[-1])).item()


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
    n, h = attn.shape[:2]
    maps = F.normalize(attn.detach().double().reshape(n, h, -1), dim=2)
    total = maps.sum(dim=1).pow(2).sum(dim=1)
    return ((total - h) / (h * (h - 1))).mean().item()


def attention_probs(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention probabilities (N, H, T, T) from a block's fused qkv projection (N, T, 3D), as
    scaled dot-product attention computes them (without dropout or a mask)."""
    n, t, d3 = qkv.shape
    q, k, _ = qkv.view(n, t, 3, heads, d3 // 3 // heads).permute(2, 0, 3, 1, 4)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
