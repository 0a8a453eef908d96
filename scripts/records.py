"""The record files the benchmark scripts keep under docs/data/: gzip'd JSON lists, saved whole after each
run so a stopped benchmark picks up where it left off, and the commit each record was made at."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """HEAD's short hash, with "+dirty" when tracked code or config differs from it: such a record was not
    made by any commit, and the tables say so."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "autofix", "reference_models", "conf")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def load(path: Path) -> list[dict]:
    return json.loads(gzip.decompress(path.read_bytes())) if path.is_file() else []


def save(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(json.dumps(records, indent=0).encode(), mtime=0))
    tmp.replace(path)   # a run stopped mid-write leaves the last whole file
