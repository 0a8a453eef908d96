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
