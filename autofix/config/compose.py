"""Composing an experiment with Hydra from the config folder, and Hydra's multi-line errors reduced to
the one line a user reads: which key or group is wrong and what is valid."""
from __future__ import annotations

from omegaconf import DictConfig

from ..core.errors import ConfigError
from ..core.paths import conf_dir
from .convert import explain_config_error, register_schemas

HYDRA_VERSION = "1.3"
register_schemas()   # experiments compose onto the typed schema, so Hydra itself rejects unknown keys


def first_of_sweep(override: str) -> str:
    """A sweep `k=a,b` checks as `k=a`: every value is checked again when its job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()))
    return f"{parsed.get_key_element()}={first}"


def check_syntax(overrides: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for o in overrides:
        if o.lstrip("+~").startswith("="):
            raise ConfigError(f"malformed override '{o}': no key before '=' (overrides look like key=value)")
        try:
            parser.parse_overrides([o])
        except OverrideParseException as e:
            detail = str(e).strip().splitlines()[0]
            raise ConfigError(f"malformed override '{o}': {detail} (overrides look like key=value)") from None


def searchpath(dirs: list[str]) -> list[str]:
    """The override that adds the user's --config-dir folders to Hydra's search path, as Hydra's own
    main does for the parent: the pre-check and every child compose with it too."""
    from pathlib import Path

    return [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs)}]"] if dirs else []


def compose(name: str, overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The experiment `name` with `overrides`; `hydra_config` keeps the `hydra` node (its run folders)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base=HYDRA_VERSION):
        return hydra_compose(name, overrides=overrides, return_hydra_config=hydra_config)


def explain(e: Exception, name: str) -> str:
    """Hydra's multi-line messages, reduced to one line that names the key and what is valid."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and getattr(e, "options", None) is not None:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        wanted = (e.missing_cfg_file or "").rsplit("/", 1)[-1]
        options = sorted(o for o in e.options if not o.startswith("_"))
        return f"unknown {group} '{wanted}'; valid: {', '.join(options)}"
    line = explain_config_error(e, compose(name, [])) or str(e).strip().splitlines()[0]
    if line.startswith("Ambiguous value"):
        line += " (to sweep over the values add --multirun; for a list write key=[a,b])"
    return line
