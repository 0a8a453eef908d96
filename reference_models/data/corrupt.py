"""Data corruptions that induced faults use: each a pure function of uint8 images and a seed."""
from __future__ import annotations

import dataclasses

import torch

from .base import ImageDataset
from .tensors import channel_stats


def colour_cast(images: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Scale each image's channels by its own random factors in [1 - strength, 1].

    Every image then carries a colour that identifies it and survives cropping and flipping: a
    shortcut for instance discrimination when colour augmentation is off (Chen et al. 2020, SimCLR,
    section 3: crops of one image share a colour histogram, and the network matches views by it).
    Darkening only, so no value clips and the images' content is kept."""
    if strength <= 0:
        return images
    g = torch.Generator().manual_seed(seed)
    factors = 1.0 - strength * torch.rand(images.shape[0], images.shape[1], 1, 1, generator=g)
    return (images.float() * factors).round_().clamp_(0, 255).to(torch.uint8)


def with_colour_cast(data: ImageDataset, strength: float, seed: int) -> ImageDataset:
    """The dataset with a colour cast on both splits (independent draws) and statistics recomputed."""
    if strength <= 0:
        return data
    train_x = colour_cast(data.train_x, strength, seed)
    val_x = colour_cast(data.val_x, strength, seed + 1)
    mean, std = channel_stats(train_x)
    return dataclasses.replace(data, train_x=train_x, val_x=val_x, mean=mean, std=std)
