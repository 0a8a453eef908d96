"""Small factories for the knobs the catalog's fixes turn: norm layer, activation, init."""
from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "layer", "group", "none")
ACTIVATIONS = ("relu", "gelu", "leaky_relu", "tanh", "sigmoid", "silu", "elu")
INITS = ("default", "kaiming", "xavier", "orthogonal", "normal", "constant")   # constant: a fault (no symmetry breaking)


def activation(name: str) -> nn.Module:
    table = {
        "relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.01),
        "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "elu": nn.ELU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return table[name]()


def norm2d(name: str, channels: int) -> nn.Module:
    """Norm for conv feature maps. 'layer' normalises over C,H,W (GroupNorm with one group)."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    if name == "group":
        return nn.GroupNorm(_groups(channels), channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; valid: {', '.join(NORMS)}")


def norm1d(name: str, features: int) -> nn.Module:
    """Norm for vectors (heads, transformer tokens)."""
    if name == "batch":
        return nn.BatchNorm1d(features)
    if name == "layer":
        return nn.LayerNorm(features)
    if name == "group":
        return nn.GroupNorm(_groups(features), features)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; valid: {', '.join(NORMS)}")


def _groups(channels: int) -> int:
    # 32 groups as in Wu & He (2018) where the width allows, else the largest divisor <= 32.
    for g in range(min(32, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def init_weights(module: nn.Module, scheme: str, nonlinearity: str = "relu") -> None:
    """Re-initialise conv and linear weights in place; 'default' keeps PyTorch's own init."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "default":
        return
    gain_name = nonlinearity if nonlinearity in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "kaiming":
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in",
                                    nonlinearity=gain_name)
        elif scheme == "xavier":
            nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain(gain_name))
        elif scheme == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=nn.init.calculate_gain(gain_name))
        elif scheme == "normal":
            nn.init.normal_(m.weight, std=0.02)
        elif scheme == "constant":  # every unit of a layer the same: gradients never tell them apart
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DropPath(nn.Module):
    """What a residual branch passes through before it joins the skip path: stochastic depth, dropping
    the branch per sample (Huang et al. 2016), and a fixed branch scale (NF-ResNets' alpha, Brock et al.
    2021; 1 = plain; near 0 the block passes its input on unchanged)."""

    def __init__(self, p: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.p, self.scale = p, scale

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def sincos_pos_embed(n_side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (n_side*n_side, dim), as used by MAE."""
    assert dim % 4 == 0, "embedding dim must be divisible by 4 for 2-D sin-cos positions"
    coords = torch.arange(n_side, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / (10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4)))
    parts = []
    for grid in (xx.flatten(), yy.flatten()):
        angles = grid[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)




class _GhostBatchNorm:
    """BatchNorm whose training statistics come from `ghost_groups` sub-batches, each normalised by its own
    mean and variance (ghost batch norm, Hoffer et al. 2017); evaluation uses the running statistics as
    usual. The running statistics take one update per sub-batch."""
    ghost_groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.ghost_groups > 1 and x.shape[0] >= self.ghost_groups:
            plain = super().forward   # (a comprehension cannot call the zero-argument super)
            return torch.cat([plain(part) for part in x.tensor_split(self.ghost_groups)])
        return super().forward(x)


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    pass


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    pass


def use_ghost_batchnorm(model: nn.Module, groups: int) -> int:
    """Turn every BatchNorm of `model` into its ghost version with `groups` sub-batches, in place (the same
    parameters and buffers, so checkpoints load either way). Returns how many were turned."""
    turned = 0
    for m in model.modules():
        for plain, ghost in ((nn.BatchNorm1d, GhostBatchNorm1d), (nn.BatchNorm2d, GhostBatchNorm2d)):
            if type(m) in (plain, ghost):
                m.__class__, m.ghost_groups = ghost, groups
                turned += 1
    return turned


__all__ = ["NORMS", "ACTIVATIONS", "INITS", "activation", "norm1d", "norm2d", "init_weights",
           "DropPath", "sincos_pos_embed", "GhostBatchNorm1d", "GhostBatchNorm2d", "use_ghost_batchnorm"]
