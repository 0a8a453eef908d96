"""Dataclass fields that carry their valid values, so a config schema can validate itself and say
what is valid in its error messages (metadata only: nothing here enforces anything)."""
from __future__ import annotations

import dataclasses
from dataclasses import field


def choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


def bounded(default, lo=None, hi=None):
    return field(default=default, metadata={"min": lo, "max": hi})


def pair(default):
    """A [low, high] range given as a list (YAML has no tuples)."""
    return field(default_factory=lambda: list(default), metadata={"pair": True})


class FieldError(ValueError):
    """A value outside what its field declares; the message names the dotted key and what is valid."""


def validate(obj, prefix: str = "") -> None:
    """Check `choices`, `min`/`max` and `pair` metadata on every field of a dataclass, recursively."""
    for f in dataclasses.fields(obj):
        value, key, meta = getattr(obj, f.name), f"{prefix}{f.name}", f.metadata
        if dataclasses.is_dataclass(value):
            validate(value, key + ".")
        elif meta.get("pair"):
            if (len(value) != 2 or not all(isinstance(x, (int, float)) for x in value) or value[0] > value[1]):
                raise FieldError(f"{key}: {list(value)!r} must be two numbers [low, high] with low <= high")
        elif "choices" in meta and value not in meta["choices"]:
            raise FieldError(f"{key}: {value!r} is not valid; choose one of {', '.join(map(str, meta['choices']))}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if lo is not None and value < lo or hi is not None and value > hi:
                rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise FieldError(f"{key}: {value!r} is out of range; valid: {rng}")
