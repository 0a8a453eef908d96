"""Images in class subfolders: path/<class>/*.png|jpg|jpeg|bmp|webp (optionally under train/ and val/).

Resizing: each image is centre-cropped to a square (the shorter side), then resized to
image_size with the same torch interpolate as the other datasets; this equals "resize the
shorter side, then centre crop" and never distorts the aspect ratio.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .assemble import as_labels
from .base import DatasetError, ImageDataset
from .splits import cap_indices, stratified_split
from .tensors import channel_stats, resize_uint8

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NAME = "imagefolder"


def _class_dirs(root: Path) -> list[Path]:
    # Hidden folders (.ipynb_checkpoints, .DS_Store-like) are never classes.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels under root; labels index `classes` (sorted folder names unless given)."""
    dirs = _class_dirs(root)
    if not dirs:
        raise DatasetError(f"{NAME}: no class subfolders in {root} (expected {root}/<class_name>/*.png|jpg|jpeg|bmp|webp)")
    names = [d.name for d in dirs] if classes is None else classes
    index = {c: i for i, c in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        if d.name not in index:
            raise DatasetError(f"{NAME}: class folder {d} is not among the train classes {names}")
        found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        files += found
        labels += [index[d.name]] * len(found)
    if not files:
        raise DatasetError(f"{NAME}: no images ({'/'.join(EXTENSIONS)}) in the class subfolders of {root}")
    return files, labels, names


def _load_image(path: Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))  # palette, grey, RGBA and CMYK all become RGB
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{NAME}: cannot read image {path} ({exc})") from exc
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(rgb[top : top + side, left : left + side]))
    return resize_uint8(square.permute(2, 0, 1).unsqueeze(0), size)[0]


def _load_all(files: list[Path], size: int) -> torch.Tensor:
    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    for i, f in enumerate(files):
        out[i] = _load_image(f, size)
    return out


def load(
    *, path: str | None, image_size: int, seed: int, val_fraction: float, n_train: int | None, n_val: int | None
) -> ImageDataset:
    if path is None:
        raise DatasetError(f"{NAME}: no data.path given (set data.path to a folder of <class_name>/ image subfolders)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{NAME}: {root} is not a folder (expected {root}/<class_name>/*.png|jpg|jpeg|bmp|webp)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_files, train_labels, classes = _scan(root / "train")
        val_files, val_labels, _ = _scan(root / "val", classes)
    else:
        files, labels, classes = _scan(root)
        tr, va = stratified_split(NAME, np.asarray(labels), val_fraction, seed)
        train_files, train_labels = [files[i] for i in tr], [labels[i] for i in tr]
        val_files, val_labels = [files[i] for i in va], [labels[i] for i in va]
    # Cap before decoding so a small run never reads the whole folder.
    keep_tr = cap_indices(np.asarray(train_labels), n_train, seed, stream=0)
    keep_va = cap_indices(np.asarray(val_labels), n_val, seed, stream=1)
    train_x = _load_all([train_files[i] for i in keep_tr], image_size)
    val_x = _load_all([val_files[i] for i in keep_va], image_size)
    mean, std = channel_stats(train_x)
    return ImageDataset(
        name=NAME,
        train_x=train_x,
        train_y=as_labels([train_labels[i] for i in keep_tr]),
        val_x=val_x,
        val_y=as_labels([val_labels[i] for i in keep_va]),
        num_classes=len(classes),
        mean=mean,
        std=std,
    )
