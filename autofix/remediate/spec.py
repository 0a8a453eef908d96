"""What a child run is, as data that crosses a process (or cluster) boundary: a JSON file."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class ChildSpec:
    trial: int                             # Optuna trial number
    role: str                              # control | random | treatment
    seed: int
    symptom: str
    experiment: str                        # conf/<experiment>.yaml
    overrides: list[str]                   # the parent's overrides, the patch, and the child settings
    out_dir: str
    intervention: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)
    patch: list[str] = field(default_factory=list)
    parent_run_id: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)
    conf_dir: Optional[str] = None
    search_dirs: list[str] = field(default_factory=list)   # --config-dir folders Hydra also searches

    @property
    def folder(self) -> Path:
        return Path(self.out_dir)

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "spec.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> "ChildSpec":
        return cls(**json.loads(Path(path).read_text()))


def merge_overrides(*groups: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (Hydra rejects a key given twice)."""
    out: dict[str, str] = {}
    for group in groups:
        for o in group:
            key = o.split("=", 1)[0].lstrip("+~")
            out.pop(key, None)
            out[key] = o
    return list(out.values())
