"""Backbones: a tiny convnet for CPUs, a CIFAR ResNet-18 and a small ViT, built from one config."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..fields import bounded, choice
from ..layers import ACTIVATIONS, INITS, NORMS, DropPath
from ..names import BACKBONE_NAMES
from .convnet import TinyConvNet
from .resnet import CifarResNet
from .vit import VisionTransformer

BACKBONES = BACKBONE_NAMES
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")   # torch.nn.Conv2d's own


@dataclass
class BackboneConfig:
    backbone: str = choice("tiny_convnet", BACKBONES)
    width: int = bounded(32, 1)            # base channels (CNNs) or embedding dim (ViT)
    depth: int = bounded(1, 1, 64)         # blocks per stage (CNNs) or transformer blocks (ViT)
    norm: str = choice("batch", NORMS)
    activation: str = choice("relu", ACTIVATIONS)
    init: str = choice("kaiming", INITS)
    dropout: float = bounded(0.0, 0.0, 0.95)    # on the pooled feature (CNNs) / in MLP blocks (ViT)
    drop_path: float = bounded(0.0, 0.0, 0.95)  # stochastic depth on residual branches
    residual: bool = True
    branch_scale: float = bounded(1.0, 0.0, 10.0)  # fixed multiplier on every residual branch (NF-ResNets' alpha)
    padding_mode: str = choice("zeros", PADDING_MODES)  # CNNs: how 3x3 convolutions fill the border
    patch_size: int = bounded(4, 1)        # ViT only
    heads: int = bounded(4, 1)             # ViT only
    mlp_ratio: float = bounded(4.0, 0.25)  # ViT only
    pos_embed: str = choice("sincos", ("sincos", "learned", "none"))  # ViT only
    pos_scale: float = bounded(1.0, 0.0, 100.0)  # ViT only: multiplies the positional table
    token_drop: float = bounded(0.0, 0.0, 0.9)   # ViT only: share of patch tokens dropped per image in training
    attn_scale: float = bounded(1.0, 0.0, 1000.0)  # ViT only: multiplies the attention logits' 1/sqrt(d)
    qk_norm: bool = False                  # ViT only: LayerNorm on queries and keys (Dehghani et al. 2023)
    head_drop: float = bounded(0.0, 0.0, 0.9)    # ViT only: chance that a head's output is dropped in training
    weight_norm: str = choice("none", ("none", "weight", "spectral"))  # reparametrise every conv/linear weight
    bn_groups: int = bounded(1, 1, 64)     # BatchNorm statistics per this many sub-batches (ghost BN); heads too
    shuffle_bn: bool = False               # two-view methods: the second view encoded in a shuffled order, so
                                           # with bn_groups > 1 its sub-batches differ from the first's


def build_backbone(cfg: BackboneConfig, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Every backbone returns pooled features of size `.out_dim` from forward(x)."""
    if cfg.backbone == "tiny_convnet":
        net = TinyConvNet(in_channels, cfg.width, cfg.depth, cfg.norm, cfg.activation, cfg.init,
                          cfg.dropout, cfg.drop_path, cfg.residual)
    elif cfg.backbone == "resnet18":
        net = CifarResNet(in_channels, cfg.width, cfg.depth, cfg.norm, cfg.activation, cfg.init,
                          cfg.dropout, cfg.drop_path, cfg.residual)
    elif cfg.backbone == "vit":
        net = VisionTransformer(in_channels, image_size, cfg.patch_size, cfg.width, cfg.depth, cfg.heads,
                                cfg.mlp_ratio, cfg.norm, cfg.activation, cfg.init, cfg.dropout,
                                cfg.drop_path, cfg.residual, cfg.pos_embed, cfg.token_drop, cfg.attn_scale,
                                cfg.qk_norm, cfg.head_drop, cfg.pos_scale)
    else:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; valid: {', '.join(BACKBONES)}")
    if cfg.branch_scale != 1.0:
        for m in net.modules():
            if isinstance(m, DropPath):   # every residual branch passes through one
                m.scale = cfg.branch_scale
    if cfg.padding_mode != "zeros":
        # set after construction: Conv2d keeps the padded widths whatever the mode, and reads the mode
        # at each forward. The ViT's patch embedding has no padding and is untouched.
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and any(p > 0 for p in m.padding):
                m.padding_mode = cfg.padding_mode
    return reparametrize(net, cfg.weight_norm)


def reparametrize(net: nn.Module, kind: str) -> nn.Module:
    """Weight normalisation (Salimans & Kingma 2016) or spectral normalisation (Miyato et al. 2018) on
    every conv and linear weight: the catalog's suggestion for noisy or exploding weights."""
    if kind == "none":
        return net
    from torch.nn.utils import parametrizations

    wrap = parametrizations.weight_norm if kind == "weight" else parametrizations.spectral_norm
    for module in list(net.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            wrap(module, "weight")
    return net


__all__ = ["BACKBONES", "BackboneConfig", "build_backbone", "TinyConvNet", "CifarResNet", "VisionTransformer"]
