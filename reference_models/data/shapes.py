"""Synthetic shapes with known generative factors.

The label is the shape; colour, position, size, rotation and background are nuisance factors
drawn at random so raw pixels say little about the class while a shape-aware encoder can.
Everything comes from numpy generators seeded by (seed, split), so it is reproducible.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .assemble import as_labels
from .base import ImageDataset
from .tensors import channel_stats

CLASSES = ("circle", "square", "triangle", "plus", "ring", "star", "semicircle", "hbar")
DEFAULT_TRAIN = 6000
DEFAULT_VAL = 1500

# Object "radius" as a fraction of the image side: large enough to read at 32 px.
SIZE_RANGE = (0.2, 0.4)
# Small rotations add pixel variety without turning a square into a diamond.
MAX_ROTATION = math.pi / 12
# Foreground/background colours closer than this (RGB in [0, 1]) are pushed apart to keep contrast.
MIN_CONTRAST = 0.5
GRADIENT_RANGE = (0.1, 0.3)  # amplitude of the low-frequency background ramp
NOISE_STD = 0.04  # per-pixel Gaussian noise, in [0, 1] units
_CHUNK = 1024  # samples rendered at once; bounds memory of the 2x supersampled grid
_STAR_INNER = 0.45  # inner/outer radius of the 5-point star


def sample_factors(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = len(CLASSES)
    # Balanced labels, shuffled, so every class appears whenever n >= number of classes.
    labels = rng.permutation(np.arange(n) % k)
    size = rng.uniform(*SIZE_RANGE, n)
    # Keep the object's bounding circle inside the frame.
    position = rng.uniform(size[:, None], 1.0 - size[:, None], (n, 2))
    rotation = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)
    colour = rng.uniform(0.0, 1.0, (n, 3))
    background = rng.uniform(0.0, 1.0, (n, 3))
    close = np.linalg.norm(colour - background, axis=1) < MIN_CONTRAST
    # Shift each channel by half the range: distance becomes ~0.87, always readable.
    colour[close] = (background[close] + 0.5) % 1.0
    return {
        "label": labels.astype(np.int64),
        "size": size,
        "position": position,
        "rotation": rotation,
        "colour": colour,
        "background": background,
        "gradient_angle": rng.uniform(0.0, 2 * math.pi, n),
        "gradient_amp": rng.uniform(*GRADIENT_RANGE, n),
    }


def _star_edge() -> tuple[float, float, float]:
    # Half a star spike, folded into [0, pi/5]: inside iff on the origin's side of the line
    # from the outer tip (1, 0) to the inner vertex at angle pi/5.
    p1 = np.array([1.0, 0.0])
    p2 = _STAR_INNER * np.array([math.cos(math.pi / 5), math.sin(math.pi / 5)])
    d = p2 - p1
    normal = np.array([d[1], -d[0]])
    c = float(normal @ p1)
    if c < 0:
        normal, c = -normal, -c
    return float(normal[0]), float(normal[1]), c


_STAR = _star_edge()


def _mask(cls: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (radius 1, y pointing down)."""
    ax, ay = np.abs(x), np.abs(y)
    if cls == "circle":
        return x * x + y * y <= 1.0
    if cls == "square":
        return np.maximum(ax, ay) <= 0.8
    if cls == "triangle":  # equilateral, apex up, vertices on the unit circle
        s3 = math.sqrt(3.0)
        return (y <= 0.5) & (s3 * x - y <= 1.0) & (-s3 * x - y <= 1.0)
    if cls == "plus":
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if cls == "ring":
        r2 = x * x + y * y
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if cls == "star":  # 5 points, one pointing up
        rho = np.sqrt(x * x + y * y)
        phi = np.arctan2(x, -y) % (2 * math.pi / 5)  # angle from "up", folded per spike
        phi = np.minimum(phi, 2 * math.pi / 5 - phi)
        nx, ny, c = _STAR
        return rho * (nx * np.cos(phi) + ny * np.sin(phi)) <= c
    if cls == "semicircle":  # flat side down; no diamond class, a rotated square would be confused with it
        return (y <= 0.35) & (x * x + (y - 0.35) ** 2 <= 0.95**2)
    if cls == "hbar":
        return (ax <= 1.0) & (ay <= 0.35)
    raise AssertionError(cls)


def _coverage(f: dict[str, np.ndarray], sl: slice, image_size: int) -> np.ndarray:
    """Fraction of each pixel covered by the object: render at 2x, then 2x2 average-pool."""
    s2 = 2 * image_size
    grid = (np.arange(s2, dtype=np.float32) + 0.5) / s2
    cx = f["position"][sl, 0, None, None].astype(np.float32)
    cy = f["position"][sl, 1, None, None].astype(np.float32)
    inv_r = (1.0 / f["size"][sl, None, None]).astype(np.float32)
    cos = np.cos(f["rotation"][sl])[:, None, None].astype(np.float32)
    sin = np.sin(f["rotation"][sl])[:, None, None].astype(np.float32)
    dx = (grid[None, None, :] - cx) * inv_r  # n x 1 x s2
    dy = (grid[None, :, None] - cy) * inv_r  # n x s2 x 1
    x = dx * cos + dy * sin  # n x s2 x s2, rotated into object coordinates
    y = dy * cos - dx * sin
    hit = np.zeros(x.shape, dtype=np.float32)
    labels = f["label"][sl]
    for k, cls in enumerate(CLASSES):
        rows = np.flatnonzero(labels == k)
        if rows.size:
            hit[rows] = _mask(cls, x[rows], y[rows])
    # Strided adds are several times faster than reshape(...).mean here.
    return 0.25 * (hit[:, 0::2, 0::2] + hit[:, 1::2, 0::2] + hit[:, 0::2, 1::2] + hit[:, 1::2, 1::2])


def render(f: dict[str, np.ndarray], image_size: int, rng: np.random.Generator) -> torch.Tensor:
    n = len(f["label"])
    out = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    grid = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        alpha = _coverage(f, sl, image_size)[:, None]  # m x 1 x S x S
        # Background: flat colour plus a linear ramp in a random direction (low frequency).
        ang = f["gradient_angle"][sl].astype(np.float32)
        ramp = np.cos(ang)[:, None, None] * (grid[None, None, :] - 0.5) + np.sin(ang)[:, None, None] * (
            grid[None, :, None] - 0.5
        )
        bg = f["background"][sl, :, None, None].astype(np.float32) + (
            f["gradient_amp"][sl, None, None, None].astype(np.float32) * ramp[:, None]
        )
        fg = f["colour"][sl, :, None, None].astype(np.float32)
        img = bg * (1.0 - alpha) + fg * alpha
        img += rng.standard_normal((m, 3, image_size, image_size), dtype=np.float32) * NOISE_STD
        out[sl] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def _split(n: int, image_size: int, seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    rng = np.random.default_rng([seed, stream])
    f = sample_factors(n, rng)
    return render(f, image_size, rng), as_labels(f["label"]), f


def load(*, image_size: int, seed: int, n_train: int | None, n_val: int | None) -> ImageDataset:
    # Rendered directly at image_size (no resampling), so edges stay crisp at any size.
    n_train = DEFAULT_TRAIN if n_train is None else n_train
    n_val = DEFAULT_VAL if n_val is None else n_val
    train_x, train_y, ft = _split(n_train, image_size, seed, stream=0)
    val_x, val_y, fv = _split(n_val, image_size, seed, stream=1)
    factors: dict[str, torch.Tensor] = {}
    for split, f in (("train", ft), ("val", fv)):
        for key in ("colour", "position", "size", "background", "rotation"):
            factors[f"{split}/{key}"] = torch.from_numpy(f[key].astype(np.float32))
    mean, std = channel_stats(train_x)
    return ImageDataset(
        name="shapes",
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        num_classes=len(CLASSES),
        mean=mean,
        std=std,
        factors=factors,
    )
