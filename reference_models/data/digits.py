"""scikit-learn's 8x8 handwritten digits: tiny, offline, and the default dataset."""
from __future__ import annotations

import numpy as np
import torch

from .assemble import as_labels, finalize
from .base import ImageDataset
from .splits import stratified_split

# load_digits pixel values run 0..16.
_MAX_VALUE = 16.0


def load(
    *, image_size: int, seed: int, val_fraction: float, n_train: int | None, n_val: int | None
) -> ImageDataset:
    from sklearn.datasets import load_digits  # here: a config check needs no sklearn (1 s)

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # 1797 x 8 x 8
    labels = np.asarray(bunch.target, dtype=np.int64)
    # Scale to the 0..255 uint8 range every other dataset uses.
    pixels = np.clip(np.rint(images * (255.0 / _MAX_VALUE)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(pixels).unsqueeze(1)  # N x 1 x 8 x 8; finalize makes it 3 channels
    tr, va = stratified_split("digits", labels, val_fraction, seed)
    return finalize(
        "digits",
        x[tr],
        as_labels(labels[tr]),
        x[va],
        as_labels(labels[va]),
        10,
        image_size=image_size,
        seed=seed,
        n_train=n_train,
        n_val=n_val,
    )
