"""ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool (He et al. 2016; the CIFAR variant used by
SimCLR/solo-learn for small images)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import DropPath, activation, init_weights, norm2d


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, norm, act, residual, drop_path):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm2d(norm, c_out)
        self.act1 = activation(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm2d(norm, c_out)
        self.act2 = activation(act)
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.shortcut = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm2d(norm, c_out))

    def forward(self, x):
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.residual:
            y = self.shortcut(x) + self.drop_path(y)
        return self.act2(y)


class CifarResNet(nn.Module):
    """Four stages of `depth` BasicBlocks (depth=2 is ResNet-18), widths w, 2w, 4w, 8w; out_dim = 8w."""

    def __init__(self, in_channels=3, width=64, depth=2, norm="batch", act="relu", init="kaiming",
                 dropout=0.0, drop_path=0.0, residual=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), norm2d(norm, width),
                                  activation(act))
        layers, c = [], width
        for stage in range(4):
            c_out = width * 2 ** stage
            for i in range(max(depth, 1)):
                layers.append(BasicBlock(c, c_out, 2 if (stage > 0 and i == 0) else 1, norm, act, residual,
                                         drop_path))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = c
        init_weights(self, init, act)

    def feature_stages(self) -> list[nn.Module]:
        """The modules whose outputs are the network's intermediate features, input first; the last
        one's pooled output is the encoder's (before the final pooling)."""
        return [self.stem, *self.layers]

    def stages(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input first: the stem, then each BasicBlock."""
        return [list(m.parameters()) for m in (self.stem, *self.layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.layers(self.stem(x))).flatten(1))
