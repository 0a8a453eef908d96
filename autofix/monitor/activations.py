"""Unit health from activations: dead ReLU channels, saturated tanh/sigmoid units, and whether the
network gives the same embeddings in train and eval mode. Non-finite input gives NaN."""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAN = float("nan")


def _finite(t: torch.Tensor) -> bool:
    return t.numel() > 0 and bool(torch.isfinite(t).all())


def dead_fraction(act: torch.Tensor, threshold: float = 0.99) -> float:
    """Share of channels of a ReLU output (N, C, ...) that are dead: exactly zero (at every spatial
    position) on more than `threshold` of the N samples. Dead units get no gradient and never recover
    (dying ReLU, Lu et al. 2019)."""
    act = act.detach()
    if act.dim() < 2 or not _finite(act):
        return NAN
    n, c = act.shape[:2]
    zero = (act.reshape(n, c, -1) == 0).all(dim=2)   # (N, C): the channel is silent for this sample
    return (zero.double().mean(dim=0) > threshold).double().mean().item()


def saturated_fraction(act: torch.Tensor, kind: str = "tanh", margin: float = 0.01) -> float:
    """Share of elements within `margin` of the bounds of a saturating activation (+-1 for tanh, 0 and
    1 for sigmoid); saturated units have near-zero derivative and stop learning."""
    act = act.detach()
    if not _finite(act):
        return NAN
    x = act.double()
    if kind == "tanh":
        sat = x.abs() >= 1.0 - margin
    elif kind == "sigmoid":
        sat = (x <= margin) | (x >= 1.0 - margin)
    else:
        raise ValueError(f"unknown activation kind {kind!r}; valid kinds: 'tanh', 'sigmoid'")
    return sat.double().mean().item()


def train_eval_cosine(train_out: torch.Tensor, eval_out: torch.Tensor) -> float:
    """Mean row-wise cosine between embeddings of the same inputs in train mode and in eval mode.
    Below about 1 means batch statistics and running statistics disagree (BatchNorm with small
    batches, Ioffe 2017 "Batch Renormalization")."""
    a, b = train_out.detach(), eval_out.detach()
    if a.shape != b.shape or not _finite(a) or not _finite(b):
        return NAN
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    return F.cosine_similarity(a, b, dim=1).mean().item()
