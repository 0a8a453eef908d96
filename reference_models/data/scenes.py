"""Digit scenes: scikit-learn's handwritten digits placed in a larger frame with nuisances.

Each image is one digit, at a random position and scale (a third to a half of the frame's side), with a
fragment of another digit beside it as clutter, light strokes on a dark ground with noise. The label is the
digit. (Rotation is supported and off: beyond a few degrees it turns a 6 into a 9.)
Pixels see the position and the clutter before the shape, so raw-pixel neighbours say less about the class
than on the centred digits, while random crops, the views SSL methods learn from, vary exactly the
nuisances that hide it. Validation digits are other writers' images than the training ones (a stratified
split of the 1,797 base images), so the probe measures the shape, not a memorised image.
Everything is drawn from numpy generators seeded by (seed, split): reproducible bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from .base import ImageDataset
from .splits import stratified_split
from .tensors import channel_stats

DEFAULT_TRAIN = 6000
DEFAULT_VAL = 1500
VAL_FRACTION = 0.2           # of the base digits, kept apart for the validation scenes
SCALE_RANGE = (0.3, 0.5)     # the digit's side as a fraction of the frame's (10-16 px of 32)
MAX_ROTATION_DEG = 0.0       # rotations beyond a few degrees turn a 6 into a 9
CLUTTER = 1                  # fragments of other digits per image
CLUTTER_SCALE = (0.25, 0.4)  # a fragment's side as a fraction of the frame's
FOREGROUND, BACKGROUND = (1.0, 1.0), (0.0, 0.0)   # grey levels the strokes and the ground are drawn from
NOISE_STD = 0.04
FACTORS = ("position", "size", "rotation")


def _placement(n: int, scale: np.ndarray, angle: np.ndarray, centre: np.ndarray) -> torch.Tensor:
    """affine_grid's thetas that put an input square of side `scale` (frame = 1) at `centre` in [-1, 1]^2,
    rotated by `angle`: the inverse map, from frame coordinates back to the input's."""
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    tx, ty = centre[:, 0], centre[:, 1]
    theta = np.stack([np.stack([cos, -sin, -(cos * tx - sin * ty)], 1),
                      np.stack([sin, cos, -(sin * tx + cos * ty)], 1)], 1)
    return torch.from_numpy(theta.astype(np.float32))


def _paste(glyphs: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    grid = F.affine_grid(theta, (len(glyphs), 1, size, size), align_corners=False)
    return F.grid_sample(F.pad(glyphs, (1, 1, 1, 1)), grid, align_corners=False, padding_mode="zeros")


def render(base: np.ndarray, labels: np.ndarray, n: int, size: int, rng: np.random.Generator):
    """`n` scenes from base digits (N x 8 x 8 in [0, 1]): uint8 images, labels, factors."""
    k = int(labels.max()) + 1
    # balanced classes: each scene's class first, then one of that class's base images
    cls = rng.permutation(np.arange(n) % k)
    pick = np.empty(n, dtype=np.int64)
    for c in range(k):
        where = cls == c
        pick[where] = rng.choice(np.flatnonzero(labels == c), int(where.sum()))
    scale = rng.uniform(*SCALE_RANGE, n)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n))
    centre = rng.uniform(-(1 - scale)[:, None], (1 - scale)[:, None], (n, 2))
    digits = torch.from_numpy(base[pick].astype(np.float32)).unsqueeze(1)
    mask = _paste(digits, _placement(n, scale, angle, centre), size)
    for _ in range(CLUTTER):   # a quarter of another digit: strokes that belong to no class
        other = base[rng.integers(0, len(base), n)]
        qy, qx = rng.integers(0, 5, n), rng.integers(0, 5, n)
        frag = sliding_window_view(other, (4, 4), axis=(1, 2))[np.arange(n), qy, qx].astype(np.float32)
        fscale = rng.uniform(*CLUTTER_SCALE, n)
        fangle = rng.uniform(-np.pi, np.pi, n)
        fcentre = rng.uniform(-0.9, 0.9, (n, 2))
        clutter = _paste(torch.from_numpy(frag).unsqueeze(1), _placement(n, fscale, fangle, fcentre), size)
        mask = torch.maximum(mask, clutter)
    fg = torch.from_numpy(rng.uniform(*FOREGROUND, (n, 1, 1, 1)).astype(np.float32))
    bg = torch.from_numpy(rng.uniform(*BACKGROUND, (n, 1, 1, 1)).astype(np.float32))
    img = bg * (1 - mask) + fg * mask
    img = img + NOISE_STD * torch.from_numpy(rng.standard_normal((n, 1, size, size)).astype(np.float32))
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8).expand(n, 3, size, size).contiguous()
    factors = {"position": centre.astype(np.float32), "size": scale.astype(np.float32),
               "rotation": angle.astype(np.float32)}
    return x, torch.from_numpy(cls.astype(np.int64)), factors


def load(*, image_size: int, seed: int, n_train: int | None, n_val: int | None) -> ImageDataset:
    from sklearn.datasets import load_digits  # here: a config check needs no sklearn (1 s)

    bunch = load_digits()
    base = np.asarray(bunch.images, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    tr, va = stratified_split("scenes", labels, VAL_FRACTION, seed)
    n_train = DEFAULT_TRAIN if n_train is None else n_train
    n_val = DEFAULT_VAL if n_val is None else n_val
    train_x, train_y, ft = render(base[tr], labels[tr], n_train, image_size, np.random.default_rng([seed, 0]))
    val_x, val_y, fv = render(base[va], labels[va], n_val, image_size, np.random.default_rng([seed, 1]))
    factors = {f"{split}/{k}": torch.from_numpy(f[k]) for split, f in (("train", ft), ("val", fv)) for k in FACTORS}
    mean, std = channel_stats(train_x)
    return ImageDataset(name="scenes", train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
                        num_classes=10, mean=mean, std=std, factors=factors)
