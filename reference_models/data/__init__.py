"""Datasets for the reference SSL models: uint8 image tensors plus labels, loaded by name.

Standalone on purpose: nothing here imports `autofix`.
"""
from __future__ import annotations

from .base import DatasetError, ImageDataset
from .registry import DATASETS, load_dataset

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_dataset"]
