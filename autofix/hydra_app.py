"""Hydra glue: compose-and-check before a run starts (so mistakes get one clear line), then hand
the command line to Hydra's own main, which owns --help, --cfg, --multirun and the run folder."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .cli import CONF_DIR
from .config import explain_config_error, register_schemas, to_run_config
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


def _check_syntax(overrides: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except OverrideParseException as e:
            detail = str(e).strip().splitlines()[0]
            raise ConfigError(f"malformed override '{o}': {detail} (overrides look like key=value)") from None


def compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base=HYDRA_VERSION):
        return hydra_compose(name, overrides=overrides)


def check_overrides(name: str, overrides: list[str], multirun: bool = False) -> None:
    """Compose the experiment with the user's overrides and validate it; raise ConfigError (one line)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    _check_syntax(overrides)
    try:
        if multirun:
            overrides = [_first_of_sweep(o) for o in overrides]
        cfg = compose(name, overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(explain(e, name)) from None
    run_cfg = to_run_config(cfg)
    if run_cfg.remediation.enabled:  # before the parent trains for minutes, not when its children start
        from .remediate.launchers import check_available
        check_available(run_cfg.launcher)


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


def task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from reference_models.data import DatasetError

    from .monitor.health import build_monitor
    from .progress import print_summary
    from .trainer import Trainer

    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.remediation.enabled:
            # the monitored parent, and child runs when it shows a symptom; a rerun resumes its folder
            from .remediate.run import run_experiment, run_folder

            hc = HydraConfig.get()
            folder = Path(run_cfg.trainer.out_dir) if run_cfg.trainer.out_dir else run_folder(run_cfg)
            done = run_experiment(run_cfg, hc.job.config_name, list(hc.overrides.task), folder,
                                  OmegaConf.to_yaml(cfg))
            print_summary(done["parent"])
            for symptom, res in done["remediated"].items():
                print(f"{symptom}: verdicts in {res['table']}")
            if done["symptoms"] and not done["remediated"]:
                print(f"symptoms: {', '.join(done['symptoms'])} (no remediation ran)")
            return
        out_dir = run_cfg.trainer.out_dir or HydraConfig.get().runtime.output_dir
        trainer = Trainer(run_cfg, out_dir, hooks=build_monitor(run_cfg.monitor), config_text=OmegaConf.to_yaml(cfg))
        summary = trainer.fit()
    except (UserError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)


def launch(name: str, args: list[str]) -> int:
    import hydra

    from .remediate.launchers import quiet_sacct_warnings

    quiet_sacct_warnings()  # a --multirun through hydra/launcher=submitit_slurm polls with sacct
    sys.argv = [f"python -m autofix run conf={name}", *args]
    hydra.main(config_path=str(CONF_DIR), config_name=name, version_base=HYDRA_VERSION)(task)()
    return 0
