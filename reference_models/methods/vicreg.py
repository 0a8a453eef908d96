"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on an expander's output."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from ..fields import bounded
from ..heads import HeadConfig
from ..losses import vicreg
from .base import MethodOutput, TwoViewMethod


@dataclass
class VICRegConfig:
    inv_weight: float = bounded(25.0, 0.0)
    var_weight: float = bounded(25.0, 0.0)
    cov_weight: float = bounded(1.0, 0.0)
    gamma: float = bounded(1.0, 0.0)   # target std of each dimension
    normalize: bool = False      # l2-normalise embeddings before the loss (a catalog suggestion, off in the paper)
    inv_warmup: float = bounded(0.0, 0.0, 1.0)   # share of training over which the invariance weight rises
                                                 # from 0 (variance and covariance first); 0 = full from the start


def invariance_ramp(progress: float, warmup: float) -> float:
    """The invariance weight's share at `progress` (0..1 of the run): linear from 0 to 1 over `warmup`."""
    return 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)


class VICReg(TwoViewMethod):
    def __init__(self, backbone: nn.Module, cfg: VICRegConfig, projector: HeadConfig, predictor: HeadConfig | None = None):
        super().__init__(backbone, projector)
        self.cfg = cfg

    def forward(self, views, progress):
        (h1, h2), (z1, z2) = self.embed(views)
        if self.cfg.normalize:
            z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        c = self.cfg
        inv_weight = c.inv_weight * invariance_ramp(progress, c.inv_warmup)
        loss, terms = vicreg(z1, z2, inv_weight, c.var_weight, c.cov_weight, c.gamma)
        weights = {"invariance": inv_weight, "variance": c.var_weight, "covariance": c.cov_weight}
        return MethodOutput(loss, {k: v.detach() for k, v in terms.items()},
                            {"encoder": (h1, h2), "projector": (z1, z2)},
                            {k: weights[k] * v for k, v in terms.items() if weights[k]})
