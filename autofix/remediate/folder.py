"""A remediation's run folder: what it holds (its manifest: the config's identity, the tracking store and
the key its studies are named by) and who works in it (a lock: one orchestrator per folder)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..config.convert import flatten
from ..config.schema import RunConfig
from ..core.errors import ConfigError
from ..core.progress import console

LOCK, MANIFEST = "orchestrator.lock", "manifest.json"
# Settings that do not change what a run computes: they do not change its identity (nor its folder).
_NOT_IDENTITY = ("tracking.", "trainer.progress", "trainer.threads", "trainer.out_dir", "launcher.")


def identity(cfg: RunConfig) -> dict:
    return {k: v for k, v in flatten(cfg).items() if not k.startswith(_NOT_IDENTITY)}


def fingerprint(cfg: RunConfig) -> str:
    return hashlib.sha1(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:10]


@contextmanager
def hold(folder: Path):
    """Hold the folder's lock while the block runs. A second orchestrator on the folder ends in one line
    naming the holder; the lock of one that died (kill -9, a lost node) is released by the kernel with its
    process, and taking over what it left in the file is logged. flock works on local disks and NFSv4."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fh)
            raise ConfigError(f"{folder} is in use by another autofix run (pid {h.get('pid', '?')} on {h.get('host', '?')}, "
                              f"since {h.get('started', '?')}); valid: wait for it to end, or another trainer.out_dir") from None
        gone = _holder(fh)
        if gone:
            console.print(f"[yellow]taking over {folder / LOCK} from pid {gone.get('pid')} on {gone.get('host')} "
                          f"(since {gone.get('started')}), which is gone[/]")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(me))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()   # a clean exit leaves no holder behind: the next run has nothing to take over
            fh.flush()


def _holder(fh) -> dict:
    fh.seek(0)
    try:
        return json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        return {}


def claim(folder: Path, cfg: RunConfig, tracking_uri: str | None) -> str:
    """The run's key (its studies' names start with it). A fresh folder gets a manifest; a folder that holds
    one must hold this config and this tracking store, else it ends in one line saying what differs."""
    path = folder / MANIFEST
    ident = json.loads(json.dumps(identity(cfg), default=str))   # as the manifest holds it: lists, not tuples
    store = tracking_uri if cfg.tracking.enabled else None
    if path.is_file():
        old = json.loads(path.read_text())
        differs = [k for k in sorted(set(ident) | set(old["identity"])) if ident.get(k) != old["identity"].get(k)]
        what = [f"{k}: {old['identity'].get(k)!r} there, {ident.get(k)!r} here" for k in differs[:3]]
        if old.get("tracking_uri") != store:
            what.append(f"tracking.uri: {old.get('tracking_uri')} there, {store} here")
        if what:
            raise ConfigError(f"{folder} holds a run of another config ({'; '.join(what)}"
                              f"{'; ...' if len(differs) > 3 else ''}); valid: the same settings to resume it, or "
                              "another trainer.out_dir (or remove the folder) to start afresh")
        return old["key"]
    if (folder / "parent.json").is_file() or (folder / "children").is_dir():
        raise ConfigError(f"{folder} holds a run without a {MANIFEST} (an older autofix's, or not ours): nothing "
                          "says which config it ran; valid: another trainer.out_dir, or remove the folder")
    key = f"{fingerprint(cfg)}-{uuid.uuid4().hex[:6]}"
    record = {"key": key, "fingerprint": fingerprint(cfg), "tracking_uri": store, "identity": ident,
              "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)   # whole or absent: a kill mid-write leaves no half manifest
    return key


def study_name(folder: Path, symptom: str) -> str:
    """The study of `symptom` in this run folder: unique to the folder, so runs sharing one storage never
    read each other's trials."""
    return f"{symptom}@{json.loads((Path(folder) / MANIFEST).read_text())['key']}"
