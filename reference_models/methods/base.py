"""What every method gives the trainer: a loss from a list of views, features for probes, and
parameter groups (so optimizers can treat heads and predictors apart)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..heads import HeadConfig, mlp


@dataclass
class MethodOutput:
    loss: torch.Tensor                       # the scalar to minimise
    terms: dict[str, torch.Tensor]           # named (unweighted) loss terms, for logging
    embeddings: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # per view, for monitors
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # the weighted terms `loss` sums (with their
                                             # graphs), where it sums several: for gradient surgery


class SSLMethod(nn.Module):
    n_views: int = 2

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, views: list[torch.Tensor], progress: float) -> MethodOutput:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Hook for momentum targets; `progress` is step / max_steps in [0, 1]."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen-feature view used by probes: the backbone's pooled output."""
        return self.backbone(x)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {"backbone": list(self.backbone.parameters())}
        seen = {id(p) for p in groups["backbone"]}
        if hasattr(self, "predictor"):  # BYOL: optimisers may give it its own learning rate
            groups["predictor"] = [p for p in self.predictor.parameters() if id(p) not in seen]
            seen |= {id(p) for p in groups["predictor"]}
        groups["head"] = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        return {k: v for k, v in groups.items() if v}


class TwoViewMethod(SSLMethod):
    """Joint-embedding methods: each view goes through the backbone and a projector."""

    def __init__(self, backbone: nn.Module, projector: HeadConfig):
        super().__init__(backbone)
        self.projector = mlp(backbone.out_dim, projector)

    shuffle_bn: bool = False   # the second view goes through in a shuffled order (set by the builder)

    def embed(self, views: list[torch.Tensor]):
        """(encoder outputs, projector outputs) of the two views."""
        h1, z1 = self._encode_project(views[0])
        h2, z2 = self.shuffled(self._encode_project, views[1])
        return (h1, h2), (z1, z2)

    def _encode_project(self, x: torch.Tensor):
        h = self.backbone(x)
        return h, self.projector(h)

    def shuffled(self, fn, x: torch.Tensor):
        """fn(x), computed on the batch in a random order and put back: with ghost batch norm, the second
        view of an image is normalised among other images than its first view (MoCo's shuffling BN), so
        batch statistics cannot tell the network which views belong together."""
        if not (self.shuffle_bn and self.training):
            return fn(x)
        order = torch.randperm(x.shape[0], device=x.device)
        back = order.argsort()
        out = fn(x[order])
        return tuple(o[back] for o in out) if isinstance(out, tuple) else out[back]
