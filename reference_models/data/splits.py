"""Deterministic splitting and size capping shared by the loaders."""
from __future__ import annotations

import numpy as np

from .base import DatasetError


def check_fraction(name: str, val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"{name}: val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def check_cap(name: str, key: str, n: int | None) -> None:
    if n is not None and n <= 0:
        raise DatasetError(f"{name}: {key} must be a positive integer or None, got {n}")


def stratified_split(name: str, labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with class proportions kept, via sklearn so it matches common practice."""
    from sklearn.model_selection import train_test_split  # here: a config check needs no sklearn (1 s)

    idx = np.arange(len(labels))
    try:
        tr, va = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as exc:  # e.g. a class with one image, or fewer val slots than classes
        reason = " ".join(str(exc).split())  # keep the message on one line
        raise DatasetError(
            f"{name}: cannot make a stratified val split ({reason}); add images or give train/ and val/ folders"
        ) from exc
    # Sorted order keeps the on-disk order inside each split, independent of sklearn's shuffling.
    return np.sort(tr), np.sort(va)


def cap_indices(labels: np.ndarray, n: int | None, seed: int, stream: int = 0) -> np.ndarray:
    """Pick at most n indices, class-balanced as far as possible, deterministically from seed.

    Balanced so that small capped runs (tests, CPU smoke runs) still see every class.
    `stream` separates the train and val draws made from one seed.
    """
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    perm = np.random.default_rng([seed, stream]).permutation(total)
    shuffled = labels[perm]
    # Rank of each sample within its class, in shuffled order; taking the lowest ranks first
    # interleaves the classes (round robin) while staying random within each class.
    order = np.argsort(shuffled, kind="stable")
    rank = np.empty(total, dtype=np.int64)
    sorted_labels = shuffled[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    counts = np.diff(np.r_[starts, total])
    rank[order] = np.arange(total) - np.repeat(starts, counts)
    chosen = perm[np.argsort(rank, kind="stable")[:n]]
    return np.sort(chosen)
