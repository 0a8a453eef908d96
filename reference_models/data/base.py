"""The container every loader returns, and the one error type they raise."""
from __future__ import annotations

from dataclasses import dataclass

import torch


class DatasetError(ValueError):
    """A data problem the user can fix (bad name, missing files); the message is one line."""


@dataclass(repr=False)
class ImageDataset:
    name: str
    train_x: torch.Tensor  # uint8, N x 3 x H x W
    train_y: torch.Tensor  # int64, N
    val_x: torch.Tensor  # uint8, M x 3 x H x W
    val_y: torch.Tensor  # int64, M
    num_classes: int
    mean: tuple[float, float, float]  # per-channel mean of train_x / 255
    std: tuple[float, float, float]
    # Optional generative factors ("train/colour", "val/position", ...); only synthetic sets have them.
    factors: dict[str, torch.Tensor] | None = None

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    def __repr__(self) -> str:
        # The default dataclass repr would print whole tensors; keep it to a summary.
        return (
            f"ImageDataset(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"val={tuple(self.val_x.shape)}, num_classes={self.num_classes})"
        )
