"""CIFAR-10 / CIFAR-100 from the standard python-pickle archives (train batches -> train, test -> val)."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .assemble import as_labels, finalize
from .base import DatasetError, ImageDataset
from .download import extract, fetch
from .safe_pickle import RefusedGlobal, load_batch


@dataclass(frozen=True)
class _Layout:
    folder: str  # folder inside the archive
    archive: str
    url: str
    md5: str  # published on the CIFAR page; a download that differs is never extracted
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    label_key: bytes
    num_classes: int


_LAYOUTS = {
    "cifar10": _Layout(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        val_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
    ),
    "cifar100": _Layout(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        val_files=("test",),
        label_key=b"fine_labels",  # the 100-class labels, not the 20 coarse ones
        num_classes=100,
    ),
}


def _complete(folder: Path, lay: _Layout) -> bool:
    return all((folder / f).is_file() for f in lay.train_files + lay.val_files)


def _find(name: str, path: str | None, download: bool) -> Path:
    """Folder holding the batch files: path/<folder>, or path itself if it is that folder."""
    lay = _LAYOUTS[name]
    if path is None:
        raise DatasetError(
            f"{name}: no data.path given (set data.path to a folder holding '{lay.folder}', or to where it should be downloaded with data.download=true)"
        )
    root = Path(path).expanduser()
    for candidate in (root / lay.folder, root):
        if _complete(candidate, lay):
            return candidate
    # A folder that exists but is incomplete is a broken extraction, not a missing dataset.
    for folder in (root / lay.folder, root):
        if folder.name != lay.folder or not folder.is_dir():
            continue
        missing = [f for f in lay.train_files + lay.val_files if not (folder / f).is_file()]
        raise DatasetError(f"{name}: {folder} is missing {', '.join(missing)} (re-extract {lay.archive} there)")
    archive = root / lay.archive
    if not archive.is_file():
        if not download:
            raise DatasetError(
                f"{name}: no '{lay.folder}' under {root} (set data.path to a folder holding it, or data.download=true)"
            )
        fetch(name, lay.url, archive, md5=lay.md5)
    # An archive placed by hand is used as well as a downloaded one.
    extract(name, archive, root)
    if not _complete(root / lay.folder, lay):
        raise DatasetError(f"{name}: {archive} did not contain a complete '{lay.folder}' folder")
    return root / lay.folder


def _read_batches(name: str, folder: Path, files: tuple[str, ...], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                # Never plain pickle.load: a file under data.path could name os.system as a "class" to rebuild.
                batch = load_batch(fh)
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[label_key], dtype=np.int64)
        except RefusedGlobal as exc:
            raise DatasetError(
                f"{name}: data.path: {folder / f} is not a CIFAR batch: it asks to load {exc.qualname}, which a CIFAR archive never holds"
            ) from exc
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
            raise DatasetError(f"{name}: cannot read {folder / f} as a CIFAR pickle batch ({exc!r})") from exc
        # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major: already C x H x W.
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), as_labels(np.concatenate(ys))


def load(
    name: str, *, path: str | None, download: bool, image_size: int, seed: int, n_train: int | None, n_val: int | None
) -> ImageDataset:
    lay = _LAYOUTS[name]
    folder = _find(name, path, download)
    train_x, train_y = _read_batches(name, folder, lay.train_files, lay.label_key)
    val_x, val_y = _read_batches(name, folder, lay.val_files, lay.label_key)
    return finalize(
        name,
        train_x,
        train_y,
        val_x,
        val_y,
        lay.num_classes,
        image_size=image_size,
        seed=seed,
        n_train=n_train,
        n_val=n_val,
    )
