"""MLP heads: projectors/expanders and predictors."""
from __future__ import annotations

from dataclasses import dataclass

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


def mlp(in_dim: int, cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(max(cfg.depth, 1) - 1):
        layers += [nn.Linear(dim, cfg.hidden_dim, bias=cfg.norm == "none"), norm1d(cfg.norm, cfg.hidden_dim),
                   activation(cfg.activation)]
        dim = cfg.hidden_dim
    layers.append(nn.Linear(dim, cfg.out_dim))
    if cfg.last_norm:
        layers.append(nn.BatchNorm1d(cfg.out_dim, affine=False))
    return nn.Sequential(*layers)
