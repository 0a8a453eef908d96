"""Fetch, checksum and unpack a dataset archive; refuses a download whose md5 differs and archive members that would escape the target folder."""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath, PureWindowsPath

from .base import DatasetError

_TIMEOUT_S = 60


def md5_of(path: Path) -> str:
    # md5 because that is what the dataset pages publish; matching a fixed published file still needs a second preimage.
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_md5(name: str, path: Path, expected: str, *, label: str | None = None) -> None:
    """Raise unless path's md5 is expected; a mismatching file is removed first, so a rerun downloads it again
    instead of taking the bad file for an archive placed by hand."""
    actual = md5_of(path)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise DatasetError(
            f"{name}: {label or path} has md5 {actual}, but the published md5 is {expected}; removed it, so the next run downloads it again"
        )


def fetch(name: str, url: str, dest: Path, *, md5: str) -> None:
    """Download url to dest via a temp file, so an interrupted or corrupt download never looks complete; md5 is required
    so that no archive reaches extract() unchecked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        # Checked before the rename: only an archive with the published digest ever carries dest's name.
        check_md5(name, Path(tmp), md5, label=f"{dest} (downloaded from {url})")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DatasetError(
            f"{name}: download of {url} failed ({exc}); place {dest.name} in {dest.parent} by hand"
        ) from exc


def _check_member(name: str, root: Path, member: tarfile.TarInfo) -> None:
    # Only plain files and folders, and only inside root: no links, devices, absolute or '../' paths. The names are
    # checked as written too, since resolve() would quietly accept 'a/../b', which no genuine archive contains.
    target = (root / member.name).resolve()
    written = PurePosixPath(member.name.replace("\\", "/"))
    absolute = written.is_absolute() or PureWindowsPath(member.name).drive != ""
    if not (member.isfile() or member.isdir()) or absolute or ".." in written.parts or not target.is_relative_to(root):
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
