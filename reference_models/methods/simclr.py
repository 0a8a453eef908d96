"""SimCLR (Chen et al. 2020): two views, a projector, NT-Xent over the batch."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..fields import bounded
from ..heads import HeadConfig
from ..losses import nt_xent
from .base import MethodOutput, TwoViewMethod


@dataclass
class SimCLRConfig:
    temperature: float = bounded(0.2, 1e-4, 100.0)
    hard_negative_beta: float = bounded(0.0, 0.0, 50.0)  # > 0: weight negatives by exp(beta * cosine)


class SimCLR(TwoViewMethod):
    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig, projector: HeadConfig, predictor: HeadConfig | None = None):
        super().__init__(backbone, projector)
        self.cfg = cfg

    def forward(self, views, progress):
        (h1, h2), (z1, z2) = self.embed(views)
        loss = nt_xent(z1, z2, self.cfg.temperature, self.cfg.hard_negative_beta)
        return MethodOutput(loss, {"nt_xent": loss.detach()}, {"encoder": (h1, h2), "projector": (z1, z2)})
