"""MLP heads: projectors/expanders and predictors."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fields import bounded, choice
from .layers import ACTIVATIONS, NORMS, activation, norm1d


@dataclass
class HeadConfig:
    hidden_dim: int = bounded(512, 1)
    out_dim: int = bounded(128, 1)
    depth: int = bounded(2, 1, 8)          # number of linear layers; 1 is a plain linear map
    norm: str = choice("batch", NORMS)     # norm after each hidden linear layer
    activation: str = choice("relu", ACTIVATIONS)
    last_norm: bool = False                # a BatchNorm without affine on the output
    l2_input: bool = False                 # l2-normalise the input (the encoder's output) first: the head
                                           # then sees directions only, whatever the encoder's scale
    spectral_norm: bool = False            # the last linear layer's weight divided by its largest singular
                                           # value (Miyato et al. 2018): the output layer cannot stretch
    center_momentum: float = bounded(0.0, 0.0, 0.999)  # > 0: subtract a running mean of the output (DINO's
                                           # centre, Caron et al. 2021) kept with this momentum; 0 = off


class L2Normalize(nn.Module):
    """Rows scaled to unit l2 norm (F.normalize as a layer, so a head stays one nn.Sequential)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class RunningCenter(nn.Module):
    """Subtracts a running mean of its input over batches: a shift of the whole output that persists
    across batches is removed, while the differences between samples pass unchanged. In training the
    current centre is subtracted first and then moved towards the batch mean (no gradient flows into it)."""

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x - self.center
        if self.training:
            with torch.no_grad():
                self.center.mul_(self.momentum).add_(x.mean(dim=0), alpha=1 - self.momentum)
        return out


def mlp(in_dim: int, cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = [L2Normalize()] if cfg.l2_input else []
    dim = in_dim
    for _ in range(max(cfg.depth, 1) - 1):
        layers += [nn.Linear(dim, cfg.hidden_dim, bias=cfg.norm == "none"), norm1d(cfg.norm, cfg.hidden_dim),
                   activation(cfg.activation)]
        dim = cfg.hidden_dim
    last = nn.Linear(dim, cfg.out_dim)
    layers.append(nn.utils.parametrizations.spectral_norm(last) if cfg.spectral_norm else last)
    if cfg.last_norm:
        layers.append(nn.BatchNorm1d(cfg.out_dim, affine=False))
    if cfg.center_momentum > 0:
        layers.append(RunningCenter(cfg.out_dim, cfg.center_momentum))
    return nn.Sequential(*layers)
