"""Terms on the weights themselves: soft orthogonality of the heads' linear layers, and the
similarity between the backbone's filters (or linear rows)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import TermInputs


def orthogonality_loss(weights: list[torch.Tensor]) -> torch.Tensor:
    """Soft orthogonality (Bansal et al. 2018): mean over matrices of ||W W^T - I||_F^2 / rows, taken on
    the side with fewer rows. 0 for matrices with orthonormal rows (or columns)."""
    total = None
    for w in weights:
        w = w.float().flatten(1)
        if w.shape[0] > w.shape[1]:
            w = w.T
        gram = w @ w.T
        err = (gram - torch.eye(len(gram), device=w.device)).pow(2).sum() / len(gram)
        total = err if total is None else total + err
    return total / len(weights) if weights else torch.zeros(())


def filter_similarity_loss(weights: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared cosine between two different units (conv filters or rows of a
    linear weight, flattened): 0 when every layer's units are orthogonal, 1 when they are all copies (or
    sign-flipped copies) of one. Unlike soft orthogonality it ignores the units' norms."""
    total = None
    for w in weights:
        u = F.normalize(w.float().flatten(1), dim=1)
        n = u.shape[0]
        cos2 = (u @ u.T).pow(2)
        err = (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))
        total = err if total is None else total + err
    return total / len(weights) if weights else torch.zeros(())


def orthogonality(inp: TermInputs, c) -> torch.Tensor:
    """On every linear layer of the projector and the predictor (BYOL's)."""
    heads = [m for m in (getattr(inp.model, "projector", None), getattr(inp.model, "predictor", None))
             if m is not None]
    return orthogonality_loss([mod.weight for h in heads for mod in h.modules() if isinstance(mod, nn.Linear)])


def filter_diversity(inp: TermInputs, c) -> torch.Tensor:
    """On the backbone's conv filters and linear rows (a layer of one unit has no pair to compare)."""
    return filter_similarity_loss([m.weight for m in inp.model.backbone.modules()
                                   if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[0] > 1])
