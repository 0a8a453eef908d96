"""Terms on the backbone's intermediate stages: VICReg's variance/covariance on each stage, CKA
between neighbouring stages, and feature scale kept through the depth; and the forward hooks that
record the stages' pooled outputs for them (`record_stage_outputs`)."""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from ..losses import covariance_term, variance_term
from .inputs import TermInputs, per_view, upcast


# ---- losses (pure functions) ----------------------------------------------------------------------
def layerwise_vc_loss(feats: list[torch.Tensor], gamma: float = 1.0, cov_ratio: float = 0.04) -> torch.Tensor:
    """VICReg's variance hinge plus `cov_ratio` times its covariance term on each layer's pooled output
    (N, C) on its own, averaged over layers: a collapse penalty for the intermediate layers, not only the
    embedding. 0.04 is VICReg's own covariance-to-variance weight (1 to 25)."""
    return sum(variance_term(f.float(), gamma) + cov_ratio * covariance_term(f.float()) for f in feats) / len(feats)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al. 2019) between two representations (N, Da) and (N, Db) of the same
    inputs: 1 when one is a rotation and isotropic scaling of the other, near 0 when unrelated.
    Differentiable; from the cross-covariance, so the cost grows with width, not N^2."""
    a, b = upcast(a), upcast(b)
    a, b = a - a.mean(0), b - b.mean(0)
    cross = (a.T @ b).pow(2).sum()
    return cross / ((a.T @ a).pow(2).sum() * (b.T @ b).pow(2).sum()).sqrt().clamp_min(1e-12)


def layer_redundancy_loss(feats: list[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between each layer's pooled output (N, C) and the next one's, averaged over the pairs:
    a penalty on neighbouring layers that hold the same representation (a block that computes nothing
    new). Needs two layers or more."""
    return sum(linear_cka(a, b) for a, b in pairwise(feats)) / (len(feats) - 1)


def norm_preservation_loss(feats: list[torch.Tensor]) -> torch.Tensor:
    """Squared log ratio of each layer's feature scale to the next one's, averaged over the pairs; a
    layer's scale is the root mean square of its pooled output (N, C) per channel, so layers of
    different widths compare. 0 when the scale holds through the depth; a layer whose output shrinks
    (or grows) tenfold adds log(10)^2 = 5.3."""
    scale = [upcast(f).pow(2).mean().clamp_min(1e-12).log() / 2 for f in feats]
    return sum((b - a).pow(2) for a, b in pairwise(scale)) / (len(feats) - 1)


# ---- recording the stages' outputs ----------------------------------------------------------------
def record_stage_outputs(backbone: nn.Module) -> None:
    """Keep the pooled output of each intermediate stage (all of `feature_stages()` but the last, whose
    output is the encoder's) of every training forward with gradients, in `backbone.stage_outputs`: the
    layer-wise term reads them after the method's forward, as the token terms read a ViT's internals.
    Forwards without gradients (the momentum target, probes, the monitor) are not kept."""
    stages = backbone.feature_stages()[:-1]
    if not stages:
        raise ValueError("regularizers.layer_vc, layer_redundancy and norm_preservation act on intermediate "
                         "stages: this backbone has only one (raise model.depth)")
    backbone.stage_outputs = []
    backbone.n_feature_stages = len(stages)

    def keep(module, args, out):
        if module.training and torch.is_grad_enabled():
            backbone.stage_outputs.append(out.mean(dim=(2, 3)) if out.dim() == 4 else out.mean(dim=1))

    for stage in stages:
        stage.register_forward_hook(keep)


def take_stage_outputs(backbone: nn.Module) -> list[list[torch.Tensor]]:
    """The recorded stage outputs, one list per forward, and the record emptied."""
    kept, n = getattr(backbone, "stage_outputs", None), getattr(backbone, "n_feature_stages", 0)
    if not kept:
        raise ValueError("regularizers.layer_vc / layer_redundancy / norm_preservation: no stage outputs were "
                         "recorded (record_stage_outputs was not called on this backbone)")
    backbone.stage_outputs = []
    return [kept[i:i + n] for i in range(0, len(kept), n)]


# ---- terms ----------------------------------------------------------------------------------------
def layer_vc(inp: TermInputs, c) -> torch.Tensor:
    return per_view(lambda feats: layerwise_vc_loss(feats, c.gamma, c.cov_ratio), inp.stage_outputs)


def layer_redundancy(inp: TermInputs, c) -> torch.Tensor:
    return per_view(layer_redundancy_loss, inp.stage_outputs)


def norm_preservation(inp: TermInputs, c) -> torch.Tensor:
    """The intermediate stages, then the encoder's output, per forward."""
    pairs = list(zip(inp.stage_outputs, inp.out.embeddings["encoder"]))
    return sum(norm_preservation_loss([*s, h]) for s, h in pairs) / len(pairs)
