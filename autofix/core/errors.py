"""User-facing errors: one clear line naming what is wrong and what is valid, never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, paths, names). The CLI prints `error: <message>` and exits 2."""


class ConfigError(UserError):
    pass
