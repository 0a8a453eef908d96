"""load_dataset: validate the common arguments once, then dispatch to the loader by name."""
from __future__ import annotations

import numbers

from . import cifar, digits, imagefolder, scenes, shapes
from .base import DatasetError, ImageDataset
from .splits import check_cap, check_fraction

DATASETS: tuple[str, ...] = ("digits", "scenes", "shapes", "cifar10", "cifar100", "imagefolder")


def load_dataset(
    name: str,
    *,
    path: str | None = None,
    image_size: int = 32,
    seed: int = 0,
    download: bool = False,
    val_fraction: float = 0.2,
    n_train: int | None = None,
    n_val: int | None = None,
) -> ImageDataset:
    """Load dataset `name` as uint8 N x 3 x image_size x image_size tensors; deterministic from seed."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    # numbers.Integral so numpy/omegaconf integers are accepted too.
    if not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise DatasetError(f"{name}: image_size must be a positive integer, got {image_size!r}")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        # numpy and sklearn seeding both need a non-negative integer.
        raise DatasetError(f"{name}: seed must be a non-negative integer, got {seed!r}")
    image_size, seed = int(image_size), int(seed)
    check_fraction(name, val_fraction)
    check_cap(name, "n_train", n_train)
    check_cap(name, "n_val", n_val)
    if name == "digits":
        return digits.load(image_size=image_size, seed=seed, val_fraction=val_fraction, n_train=n_train, n_val=n_val)
    if name == "scenes":
        return scenes.load(image_size=image_size, seed=seed, n_train=n_train, n_val=n_val)
    if name == "shapes":
        return shapes.load(image_size=image_size, seed=seed, n_train=n_train, n_val=n_val)
    if name in ("cifar10", "cifar100"):
        return cifar.load(
            name, path=path, download=download, image_size=image_size, seed=seed, n_train=n_train, n_val=n_val
        )
    return imagefolder.load(
        path=path, image_size=image_size, seed=seed, val_fraction=val_fraction, n_train=n_train, n_val=n_val
    )
