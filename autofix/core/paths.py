"""Where autofix finds its data: the Hydra configs, the intervention registry with the catalog links,
and the bundled catalog. Each is read from the environment at every call, not at import, so a child
process (or a test) that sets AUTOFIX_CONF_DIR after autofix was imported still gets its own folder."""
from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]
BUNDLED_CATALOG = Path(__file__).resolve().parents[1] / "resources" / "ssl-1000-fixes.md"


def conf_dir() -> Path:
    """The Hydra config folder: AUTOFIX_CONF_DIR, else the checkout's conf/."""
    return Path(os.environ.get("AUTOFIX_CONF_DIR") or _CHECKOUT / "conf")


def interventions_dir() -> Path:
    """The intervention registry, the symptom list and the catalog links: AUTOFIX_INTERVENTIONS_DIR,
    else the checkout's interventions/."""
    return Path(os.environ.get("AUTOFIX_INTERVENTIONS_DIR") or _CHECKOUT / "interventions")


def check_writable(key: str, folder: Path) -> None:
    """A folder the run will make must be makeable: its nearest existing ancestor a folder that this user
    can write in (tried with a temporary folder, removed at once: permissions, a read-only mount and
    /proc all show). Raises ConfigError naming `key`, so the mistake ends before anything is written."""
    import tempfile

    from .errors import ConfigError

    folder = Path(folder).expanduser().absolute()
    for p in [folder, *folder.parents]:
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{key}: {folder} cannot be a folder, {p} is a file; valid: a path under a folder")
            try:
                os.rmdir(tempfile.mkdtemp(prefix=".autofix-probe-", dir=p))
            except OSError as e:
                raise ConfigError(f"{key}: {folder} cannot be made, {p} is not writable ({e.strerror}); "
                                  "valid: a path under a folder you can write") from None
            return
