"""Shape of a loss curve over a window of recent values (a list or a 1-D tensor): is it still going
down, does it spike, does it zig-zag. NaN in, NaN out; too short a window gives NaN."""
from __future__ import annotations

import numpy as np
import torch

NAN = float("nan")
MAD_TO_STD = 1.4826           # MAD of a normal distribution times this is its std
MEANAD_TO_STD = 1.253314      # same for the mean absolute deviation (Iglewicz & Hoaglin 1993)


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def progress_given_back(first: float, lowest: float, now: float) -> float:
    """(now - lowest) / (first - lowest): the share of the progress from the start to the lowest loss so
    far that the loss has given back. 0 at a new low, 1 back at the start, above 1 worse than the start;
    NaN before there is progress (lowest >= first) or with a non-finite input."""
    if not all(np.isfinite([first, lowest, now])) or first - lowest <= 1e-12:
        return NAN
    return float((now - lowest) / (first - lowest))


def relative_improvement(values) -> float:
    """(mean of the first quarter - mean of the last quarter) / |mean of the first quarter|: the share
    of the loss removed over the window. Near 0 = stalled, negative = getting worse."""
    x = _array(values)
    if x.size < 4 or not np.isfinite(x).all():  # a NaN anywhere in the window voids the comparison
        return NAN
    q = x.size // 4
    first, last = x[:q].mean(), x[-q:].mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((first - last) / abs(first))


def _robust_scores(x: np.ndarray) -> np.ndarray:
    """Modified z-scores (x - median) / robust std; the median and MAD ignore a few outliers, so one
    spike cannot hide itself by inflating the scale as it would a mean/std z-score."""
    med = np.median(x)
    dev = x - med
    scale = MAD_TO_STD * np.median(np.abs(dev))
    if scale == 0:
        # more than half the values are equal: fall back to the mean absolute deviation
        scale = MEANAD_TO_STD * np.abs(dev).mean()
    if scale == 0:
        return np.zeros_like(x)  # all equal: no spike
    return dev / scale


def robust_spike_score(values) -> float:
    """Largest upward robust z-score in the window: max (x - median) / (1.4826 MAD) (Iglewicz &
    Hoaglin 1993; falls back to 1.2533 * mean absolute deviation when MAD is 0, and 0 when all values
    are equal). A loss spike is a value many robust stds above the window's median."""
    x = _array(values)
    if x.size == 0 or not np.isfinite(x).all():
        return NAN
    return float(_robust_scores(x).max())


def spike_count(values, z: float = 6) -> int | float:
    """Number of values whose upward robust z-score (see robust_spike_score) exceeds z."""
    x = _array(values)
    if x.size == 0 or not np.isfinite(x).all():
        return NAN
    return int((_robust_scores(x) > z).sum())


def oscillation(values) -> float:
    """Share of consecutive first differences that change sign: 0 for a monotone curve, 1 for one that
    goes up and down at every step (learning rate too high for the curvature). Flat steps (difference
    exactly 0) are skipped; NaN for fewer than 3 values."""
    x = _array(values)
    if x.size < 3 or not np.isfinite(x).all():
        return NAN
    s = np.sign(np.diff(x))
    s = s[s != 0]
    if s.size < 2:
        return 0.0
    return float((s[1:] != s[:-1]).mean())
