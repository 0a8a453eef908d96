"""The canonical symptoms (interventions/symptoms.yaml): id -> name and description. The catalog entries
each one stands for are read from the catalog links (interventions/catalog_links/)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..core import yaml_files
from ..core.errors import ConfigError
from ..core.paths import interventions_dir


@dataclass(frozen=True)
class SymptomInfo:
    id: str
    name: str
    description: str


def load_symptoms(path: str | None = None) -> dict[str, SymptomInfo]:
    return _load(str(Path(path) if path else interventions_dir() / "symptoms.yaml"))


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, SymptomInfo]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no symptom list at {p}")
    raw = yaml_files.read(p, ConfigError, name=str(p))
    out = {}
    for sid, d in (raw or {}).items():
        if not isinstance(d, dict) or "name" not in d:
            raise ConfigError(f"{p}: symptom {sid!r} needs a 'name' field")
        out[sid] = SymptomInfo(sid, d["name"], d.get("description", ""))
    return out

