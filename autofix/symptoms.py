"""The canonical symptoms (interventions/symptoms.yaml): id -> name and description. The catalog entries
each one stands for are read from the catalog links (interventions/catalog_links/)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import yaml_files
from .errors import ConfigError

INTERVENTIONS_DIR = Path(os.environ.get("AUTOFIX_INTERVENTIONS_DIR",
                                        Path(__file__).resolve().parent.parent / "interventions"))


@dataclass(frozen=True)
class SymptomInfo:
    id: str
    name: str
    description: str


@lru_cache(maxsize=None)
def load_symptoms(path: str | None = None) -> dict[str, SymptomInfo]:
    p = Path(path) if path else INTERVENTIONS_DIR / "symptoms.yaml"
    if not p.is_file():
        raise ConfigError(f"no symptom list at {p}")
    raw = yaml_files.read(p, ConfigError, name=str(p))
    out = {}
    for sid, d in (raw or {}).items():
        if not isinstance(d, dict) or "name" not in d:
            raise ConfigError(f"{p}: symptom {sid!r} needs a 'name' field")
        out[sid] = SymptomInfo(sid, d["name"], d.get("description", ""))
    return out


def catalog_ids() -> dict[str, list[int]]:
    """symptom id -> the catalog entries linked to it."""
    from .links import load as load_links

    linked = load_links()
    return {sid: linked.for_symptom(sid) for sid in load_symptoms()}
