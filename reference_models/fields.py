"""Dataclass fields that carry their valid values, so a config schema can validate itself and say
what is valid in its error messages (metadata only: nothing here enforces anything)."""
from __future__ import annotations

from dataclasses import field


def choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


def bounded(default, lo=None, hi=None):
    return field(default=default, metadata={"min": lo, "max": hi})


def pair(default):
    """A [low, high] range given as a list (YAML has no tuples)."""
    return field(default_factory=lambda: list(default), metadata={"pair": True})
