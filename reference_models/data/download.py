"""Fetch and unpack a dataset archive; refuses archive members that would escape the target folder."""
from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .base import DatasetError

_TIMEOUT_S = 60


def fetch(name: str, url: str, dest: Path) -> None:
    """Download url to dest via a temp file, so an interrupted download never looks complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DatasetError(
            f"{name}: download of {url} failed ({exc}); place {dest.name} in {dest.parent} by hand"
        ) from exc


def _check_member(name: str, root: Path, member: tarfile.TarInfo) -> None:
    # Only plain files and folders, and only inside root: no links, devices or '../' paths.
    target = (root / member.name).resolve()
    if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
        raise DatasetError(f"{name}: unsafe archive member {member.name!r}; delete the archive and download it again")


def extract(name: str, archive: Path, root: Path) -> None:
    root = root.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(name, root, m)
            # The 'data' filter (Python >= 3.11.4) re-checks the same things inside tarfile.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; members already vetted above
                tar.extractall(root, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{name}: cannot extract {archive} ({exc}); delete it and download it again") from exc
