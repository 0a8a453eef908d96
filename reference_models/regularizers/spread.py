"""Terms on how a batch of embeddings spreads: variance and covariance (VICReg's), uniformity,
entropy over dimensions, feature norm, repulsion from the nearest neighbour, and the two-view terms
that cap alignment or match the views' covariances."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import covariance_matrix, covariance_term, variance_term
from .inputs import TermInputs, per_view


# ---- losses (pure functions) ----------------------------------------------------------------------
def uniformity_loss(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020): log mean exp(-t ||u_i - u_j||^2) over distinct pairs of l2-normalised rows.
    0 when every row is the same point; lower (negative) when the rows spread over the sphere."""
    u = F.normalize(z.float(), dim=1)
    sq = torch.pdist(u).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(sq.numel()), device=z.device))


def entropy_loss(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Negative entropy of the batch-mean softmax over dimensions (the mean-entropy maximisation of
    MSN / DINO-style prototypes): -log(D) when the batch uses every dimension equally, 0 when all
    of it lands in one."""
    p = F.softmax(z.float() / temperature, dim=1).mean(dim=0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


def feature_norm_loss(z: torch.Tensor, target: float = 0.0) -> torch.Tensor:
    """Mean squared distance of each row's l2 norm from `target` (0: a plain feature-norm penalty)."""
    return (z.float().norm(dim=1) - target).pow(2).mean()


def repulsion_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cosine to the nearest other row: 1 when rows coincide, 0 when all are
    orthogonal, so minimising it pushes each embedding away from its closest neighbour."""
    u = F.normalize(z.float(), dim=1)
    sim = u @ u.T
    sim = sim - 2.0 * torch.eye(len(u), device=u.device)  # exclude self-similarity from the max
    return sim.max(dim=1).values.mean()


def overalignment_loss(z1: torch.Tensor, z2: torch.Tensor, margin: float = 0.9) -> torch.Tensor:
    """Mean of relu(cos(z1_i, z2_i) - margin) over the pairs: 0 while every pair of views is at most
    `margin` alike, growing as pairs coincide (1 - margin when identical). A cap on alignment, where
    the methods' own losses only pull pairs together."""
    return F.relu(F.cosine_similarity(z1.float(), z2.float(), dim=1) - margin).mean()


def covariance_gap(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance between the two views' covariance matrices, over d: 0 when both views
    spread the batch along the same axes by the same amounts, whatever their means."""
    return (covariance_matrix(z1.float()) - covariance_matrix(z2.float())).pow(2).sum() / z1.shape[1]


# ---- terms (one step's inputs and the term's config -> the unweighted value) ----------------------
def variance(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda z: variance_term(z.float(), c.gamma), inp.branch(c.on, "variance"))


def covariance(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda z: covariance_term(z.float()), inp.branch(c.on, "covariance"))


def uniformity(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda z: uniformity_loss(z, c.t), inp.branch(c.on, "uniformity"))


def entropy(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda z: entropy_loss(z, c.temperature), inp.branch(c.on, "entropy"))


def feature_norm(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda z: feature_norm_loss(z, c.target), inp.branch(c.on, "feature_norm"))


def repulsion(inp: TermInputs, c) -> torch.Tensor:
    return per_view(repulsion_loss, inp.branch(c.on, "repulsion"))


def overalignment(inp: TermInputs, c) -> torch.Tensor:
    zs = inp.two_views(c.on, "overalignment")
    return overalignment_loss(zs[0], zs[1], c.margin)


def view_covariance(inp: TermInputs, c) -> torch.Tensor:
    zs = inp.two_views(c.on, "view_covariance")
    return covariance_gap(zs[0], zs[1])
