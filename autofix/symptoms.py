"""The canonical symptoms (interventions/symptoms.yaml): id -> name, description, catalog entries."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import ConfigError

INTERVENTIONS_DIR = Path(os.environ.get("AUTOFIX_INTERVENTIONS_DIR",
                                        Path(__file__).resolve().parent.parent / "interventions"))


@dataclass(frozen=True)
class SymptomInfo:
    id: str
    name: str
    description: str
    catalog: tuple[int, ...] = field(default_factory=tuple)


@lru_cache(maxsize=None)
def load_symptoms(path: str | None = None) -> dict[str, SymptomInfo]:
    p = Path(path) if path else INTERVENTIONS_DIR / "symptoms.yaml"
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no symptom list at {p}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{p}:{mark.line + 1 if mark else '?'}: malformed YAML") from None
    out = {}
    for sid, d in (raw or {}).items():
        if not isinstance(d, dict) or not {"name", "catalog"} <= set(d):
            raise ConfigError(f"{p}: symptom {sid!r} needs 'name' and 'catalog' fields")
        out[sid] = SymptomInfo(sid, d["name"], d.get("description", ""), tuple(int(i) for i in d["catalog"]))
    return out


def catalog_ids() -> dict[str, list[int]]:
    return {k: list(v.catalog) for k, v in load_symptoms().items()}
