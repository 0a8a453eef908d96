"""Terms on a ViT's attention maps and tokens: attention entropy pulled to a target, heads kept
apart, patch tokens kept apart (against over-smoothing); and the pair-cosine and entropy measures
the monitor shares."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import TOKEN_TERMS
from .inputs import TermInputs, upcast


# ---- measures and losses (pure functions) ---------------------------------------------------------
def mean_pair_cosine(x: torch.Tensor) -> torch.Tensor:
    """(N, K, F) -> the cosine between two different rows of the same group, averaged over pairs and
    groups: 1 when a group's rows are one direction, near 0 for unrelated rows. Needs K >= 2."""
    u = F.normalize(upcast(x), dim=2)
    k = u.shape[1]
    total = u.sum(dim=1).pow(2).sum(dim=1)      # |sum of unit vectors|^2 = k + the sum over pairs i != j
    return ((total - k) / (k * (k - 1))).mean()


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean entropy of attention rows (N, H, T, T) over log(T): 1 when every query attends to all T
    keys alike, 0 when each attends to a single key."""
    p = upcast(attn)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
    return h.mean() / math.log(attn.shape[-1])


def attention_entropy_loss(maps: list[torch.Tensor], target: float) -> torch.Tensor:
    """Mean over blocks of (normalised attention entropy - target)^2: pulls attention that selects
    one key (entropy 0) or nothing (entropy 1) towards a target in between."""
    return sum((attention_entropy(a) - target).pow(2) for a in maps) / len(maps)


def head_diversity_loss(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the cosine between two heads' attention maps of the same image: 1 when all
    heads attend alike; minimising it makes heads specialise."""
    return sum(mean_pair_cosine(a.flatten(2)) for a in maps) / len(maps)


def token_similarity_loss(tokens: torch.Tensor) -> torch.Tensor:
    """Mean cosine between two different patch tokens (class token excluded) of the same image: 1 when
    every token of an image is one vector (token collapse, over-smoothing)."""
    return mean_pair_cosine(tokens[:, 1:])


# ---- what the training forward recorded -----------------------------------------------------------
def take_internals(backbone: nn.Module, active: list[str]) -> list:
    """(attention maps per block, final tokens) of each training forward since the last step, and the
    record emptied."""
    recorded = getattr(backbone, "internals", None) or []
    if not recorded:
        raise ValueError(f"regularizers {', '.join(n for n in active if n in TOKEN_TERMS)} act on attention "
                         "and tokens: they need the vit backbone with keep_internals set (model=vit_tiny)")
    backbone.internals = []
    return recorded


# ---- terms (averaged over the recorded forwards) --------------------------------------------------
def attention_entropy_term(inp: TermInputs, c) -> torch.Tensor:
    return sum(attention_entropy_loss(maps, c.target) for maps, _ in inp.internals) / len(inp.internals)


def head_diversity(inp: TermInputs, c) -> torch.Tensor:
    return sum(head_diversity_loss(maps) for maps, _ in inp.internals) / len(inp.internals)


def token_similarity(inp: TermInputs, c) -> torch.Tensor:
    return sum(token_similarity_loss(tok) for _, tok in inp.internals) / len(inp.internals)
