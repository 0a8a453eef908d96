"""Hydra glue: compose-and-check before a run starts (so mistakes get one clear line), then hand
the command line to Hydra's own main, which owns --help, --cfg, --multirun and the run folder."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from .cli import CONF_DIR
from .config import register_schemas, to_run_config
from .errors import ConfigError, UserError

HYDRA_VERSION = "1.3"
register_schemas()


def _first_of_sweep(override: str) -> str:
    """A sweep `k=a,b` checks as `k=a`: every value is checked again when its job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()))
    return f"{parsed.get_key_element()}={first}"


def compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base=HYDRA_VERSION):
        return hydra_compose(name, overrides=overrides)


def check_overrides(name: str, overrides: list[str]) -> None:
    """Compose the experiment with the user's overrides and validate it; raise ConfigError (one line)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        overrides = [_first_of_sweep(o) for o in overrides]
        cfg = compose(name, overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(explain(e, name)) from None
    to_run_config(cfg)


def explain(e: Exception, name: str) -> str:
    """Hydra's multi-line messages, reduced to one line that names the key and what is valid."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and getattr(e, "options", None) is not None:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        wanted = (e.missing_cfg_file or "").rsplit("/", 1)[-1]
        return f"unknown {group} '{wanted}'; valid: {', '.join(sorted(e.options))}"
    cause = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    key = getattr(cause, "full_key", None)
    text = " ".join(str(cause).split())
    if key and ("not in struct" in text or "Missing key" in text):
        parent = key.rpartition(".")[0]
        base = compose(name, [])
        node = OmegaConf.select(base, parent) if parent else base
        valid = ", ".join(k for k in node.keys() if k != "hydra") if isinstance(node, DictConfig) else "-"
        where = f"under '{parent}'" if parent else "at the top level"
        return f"unknown config key '{key}'; valid keys {where}: {valid}"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from reference_models.data import DatasetError

    from .progress import print_summary
    from .trainer import Trainer

    try:
        run_cfg = to_run_config(cfg)
        out_dir = run_cfg.trainer.out_dir or HydraConfig.get().runtime.output_dir
        trainer = Trainer(run_cfg, out_dir, config_text=OmegaConf.to_yaml(cfg))
        summary = trainer.fit()
    except (UserError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)


def launch(name: str, args: list[str]) -> int:
    import hydra

    sys.argv = [f"python -m autofix run conf={name}", *args]
    hydra.main(config_path=str(CONF_DIR), config_name=name, version_base=HYDRA_VERSION)(task)()
    return 0
