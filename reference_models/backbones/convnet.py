"""A tiny three-stage convnet that trains in minutes on two CPU cores."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import DropPath, activation, init_weights, norm2d


class ConvBlock(nn.Module):
    """conv3x3 -> norm -> act, with an identity shortcut when shapes allow and residual is on."""

    def __init__(self, c_in, c_out, stride, norm, act, residual, drop_path):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=norm == "none")
        self.norm = norm2d(norm, c_out)
        self.act = activation(act)
        self.residual = residual and stride == 1 and c_in == c_out
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        y = self.norm(self.conv(x))
        if self.residual:
            y = x + self.drop_path(y)
        return self.act(y)


class TinyConvNet(nn.Module):
    """Stem, then three stages (width, 2*width, 4*width channels; stride 2 between stages), global
    average pooling. `depth` is the number of blocks per stage; out_dim = 4 * width."""

    def __init__(self, in_channels=3, width=32, depth=1, norm="batch", act="relu", init="kaiming",
                 dropout=0.0, drop_path=0.0, residual=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=norm == "none"),
                                  norm2d(norm, width), activation(act))
        blocks, c = [], width
        for stage in range(3):
            c_out = width * 2 ** stage
            for i in range(max(depth, 1)):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(ConvBlock(c, c_out, stride, norm, act, residual, drop_path))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = c
        init_weights(self, init, act)

    def feature_stages(self) -> list[nn.Module]:
        """The modules whose outputs are the network's intermediate features, input first; the last
        one's pooled output is the encoder's."""
        return [self.stem, *self.blocks]

    def stages(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input first: the stem, then each block."""
        return [list(m.parameters()) for m in (self.stem, *self.blocks)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pool(self.blocks(self.stem(x))).flatten(1))
