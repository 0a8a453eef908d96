"""Checkpoints: everything a run needs to continue bit-for-bit (model incl. EMA target, optimizer,
scheduler, scaler, data order, RNG states, step), written atomically into a small ring of files.

Everything stored is tensors, numbers, strings and containers, so it loads with weights_only=True."""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError

PATTERN = re.compile(r"^step_(\d+)\.pt$")


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    for k, g in generators.items():
        if k in state["generators"]:
            g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


class CheckpointRing:
    """Keeps the newest `keep` checkpoints in `folder`; files kept with `pin` survive rotation
    (the remediation loop pins the last healthy one)."""

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder = Path(folder)
        self.keep = keep
        self.pinned: set[int] = set()

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := PATTERN.match(p.name)))

    def save(self, step: int, payload: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(step)
        tmp = target.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, target)  # a crash mid-write never leaves a truncated checkpoint behind
        self._rotate()
        return target

    def pin(self, step: int) -> None:
        self.pinned.add(step)

    def _rotate(self) -> None:
        unpinned = [s for s in self.steps() if s not in self.pinned]
        for s in unpinned[:-self.keep]:
            self.path(s).unlink(missing_ok=True)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None


def find_checkpoint(where: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/ ring): the newest checkpoint in it."""
    p = Path(where)
    if p.is_file():
        return p
    for folder in (p / "checkpoints", p):
        latest = CheckpointRing(folder).latest()
        if latest is not None:
            return latest
    raise FileNotFoundError(f"no checkpoint at {p} (expected a step_*.pt file or a run folder with checkpoints/)")


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's state; a file that is not one (truncated, empty, random bytes, not ours) is a user's
    mistake in one line, not a traceback from deep inside torch's unpickler."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        why = "empty file" if Path(path).is_file() and Path(path).stat().st_size == 0 else type(e).__name__
        raise ConfigError(f"{path} is not a readable checkpoint ({why}: truncated, corrupt or not a checkpoint); "
                          "valid: a step_*.pt file an autofix run wrote, or the run folder holding it") from None
    return state
