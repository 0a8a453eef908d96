"""Last common step of every loader: cap sizes, resize, force 3 channels, compute statistics."""
from __future__ import annotations

import numpy as np
import torch

from .base import ImageDataset
from .splits import cap_indices
from .tensors import channel_stats, resize_uint8, to_rgb


def finalize(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    *,
    image_size: int,
    seed: int,
    n_train: int | None = None,
    n_val: int | None = None,
) -> ImageDataset:
    # Cap first so resizing only touches the images that are kept.
    tr = torch.from_numpy(cap_indices(train_y.numpy(), n_train, seed, stream=0))
    va = torch.from_numpy(cap_indices(val_y.numpy(), n_val, seed, stream=1))
    train_x = to_rgb(resize_uint8(train_x[tr], image_size))
    val_x = to_rgb(resize_uint8(val_x[va], image_size))
    mean, std = channel_stats(train_x)
    return ImageDataset(
        name=name,
        train_x=train_x.contiguous(),
        train_y=train_y[tr].to(torch.int64),
        val_x=val_x.contiguous(),
        val_y=val_y[va].to(torch.int64),
        num_classes=int(num_classes),
        mean=mean,
        std=std,
    )


def as_labels(y: np.ndarray | list[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.int64)
