"""Command line: `python -m autofix run conf=NAME [hydra overrides]` and friends.

`conf=NAME` picks an experiment file conf/NAME.yaml as Hydra's primary config; every other
argument goes to Hydra untouched, so --help, --cfg job and --multirun behave as Hydra documents."""
from __future__ import annotations

import sys

from ..core.errors import UserError
from ..core.paths import conf_dir

USAGE = """usage: python -m autofix <command> [args]

commands:
  run conf=NAME [overrides]   train an experiment from conf/NAME.yaml (Hydra overrides, --help, --cfg job, -m)
  catalog list|show N|search TEXT|stats|coverage [catalog.path=FILE]
                              read the failure catalog and what autofix detects and tries for each entry
  interventions [list|show ID]
                              the registry of config patches (interventions/*.yaml)
  report [--experiment NAME | --run ID] [--html FILE] | --evidence [--out FILE]
                              fix leaderboards and the evidence file, read from MLflow

experiments: {experiments}
"""


def experiments() -> list[str]:
    folder = conf_dir()
    if not folder.is_dir():
        raise UserError(f"no config folder at {folder}: install from a checkout with `pip install -e .`, "
                        "or set AUTOFIX_CONF_DIR to a folder of experiment YAML files")
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    # Each command imports only its own module, here rather than at the top: `catalog` and `report` run
    # without loading Hydra's app, torch and the training code that `run` needs.
    try:
        if command in ("-h", "--help", "help"):
            print(USAGE.format(experiments=", ".join(experiments())))
            return 0
        if command == "run":
            return run_command(rest)
        if command == "catalog":
            from .catalog_cli import main as catalog_main
            return catalog_main(rest)
        if command == "interventions":
            from .catalog_cli import interventions_main
            return interventions_main(rest)
        if command == "report":
            from .report import main as report_main
            return report_main(rest)
        raise UserError(f"unknown command {command!r}; valid: run, catalog, interventions, report")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# Hydra's flags that take a value: that value is not an override.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}


def overrides_only(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in _VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def config_dirs(args: list[str]) -> list[str]:
    """The folders given with --config-dir / -cd: Hydra searches them too, and so must the pre-check."""
    out = []
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--config-dir="):
            out.append(a.split("=", 1)[1])
    return out


def run_command(args: list[str]) -> int:
    from .hydra_app import check_overrides, launch  # torch and the training code: only for `run`

    names = [a.split("=", 1)[1] for a in args if a.startswith("conf=")]
    rest = [a for a in args if not a.startswith("conf=")]
    if not names:
        raise UserError(f"missing conf=NAME; available experiments: {', '.join(experiments())}")
    name = names[-1]
    if name not in experiments():
        raise UserError(f"unknown experiment conf={name}; available: {', '.join(experiments())}")
    help_flags = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}
    if not help_flags.intersection(rest):
        # `--cfg job` prints the composed config and runs nothing: it needs no launcher (no sbatch on PATH)
        check_overrides(name, overrides_only(rest), multirun=bool({"-m", "--multirun"} & set(rest)),
                        launching=not {"--cfg", "-c"} & set(rest), search=config_dirs(rest))
    return launch(name, rest)
