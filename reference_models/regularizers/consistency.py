"""The consistency term: an input's embedding kept close to that of the same input perturbed (noise,
a lower resolution, shuffled blocks, a small shift), at the cost of one more forward pass."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment import at_resolution, shifted, shuffle_blocks
from .inputs import TermInputs


def consistency_loss(z: torch.Tensor, z_noisy: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine between embeddings of an input and of the same input with noise: 0 when the
    noise changes no direction, 1 when the two are orthogonal."""
    return 1.0 - F.cosine_similarity(z.float(), z_noisy.float(), dim=1).mean()


def perturbed(x: torch.Tensor, c) -> torch.Tensor:
    """The batch `x` under the perturbation `c` (a ConsistencyReg) names."""
    if c.perturbation == "noise":
        return x + c.sigma * torch.randn_like(x)
    if c.perturbation == "lowres":
        return at_resolution(x, c.lowres)
    if c.perturbation == "shuffle":
        return shuffle_blocks(x, c.grid)
    if c.perturbation == "shift":
        return shifted(x, c.shift)
    raise KeyError(c.perturbation)


def consistency(inp: TermInputs, c) -> torch.Tensor:
    """One more forward pass of the first view, perturbed, against the method's own embedding of it."""
    zs = inp.branch(c.on, "consistency")
    model = inp.model
    h = model.backbone(perturbed(inp.views[0], c))
    noisy = model.projector(h) if c.on == "projector" and hasattr(model, "projector") else h
    return consistency_loss(zs[0], noisy)
