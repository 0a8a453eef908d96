"""Hydra glue: compose-and-check before a run starts (so mistakes get one clear line), then hand
the command line to Hydra's own main, which owns --help, --cfg, --multirun and the run folder."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from reference_models.data import DatasetError

from ..config.compose import HYDRA_VERSION, check_syntax, compose, explain, first_of_sweep, searchpath
from ..config.convert import to_run_config
from ..core.errors import ConfigError, UserError
from ..core.paths import check_writable, conf_dir
from ..core.progress import print_summary
from ..knowledge import interventions
from ..remediate.experiment import run_experiment, run_folder
from ..remediate.launchers import check_available, quiet_sacct_warnings
from ..remediate.plan import check_candidates
from ..remediate.study import check_storage
from ..run import checkpoint
from ..run.assemble import assemble
from ..run.tracking import check_uri, default_uri


def check_overrides(name: str, overrides: list[str], multirun: bool = False, launching: bool = True,
                    search: list[str] = ()) -> None:
    """Compose the experiment with the user's overrides and validate it; raise ConfigError (one line).
    `launching`: the run will start (not `--cfg`), so its folders must be makeable and the launcher its
    children need must be there."""
    check_syntax(overrides)
    try:
        if multirun:
            overrides = [first_of_sweep(o) for o in overrides]
        cfg = compose(name, searchpath(search) + overrides, hydra_config=True)
    except yaml.YAMLError as e:   # a config file of the user's that does not parse
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark else "a config file"
        raise ConfigError(f"{where}: malformed YAML ({getattr(e, 'problem', None) or e}); fix the file "
                          "(YAML: key: value, lists as [a, b])") from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(explain(e, name)) from None
    with open_dict(cfg):
        hydra_cfg = cfg.pop("hydra")
    run_cfg = to_run_config(cfg)
    if launching:   # Hydra makes its run folder (or the sweep's) before the job starts, and says why in a traceback
        key, where = ("hydra.sweep.dir", hydra_cfg.sweep.dir) if multirun else ("hydra.run.dir", hydra_cfg.run.dir)
        check_writable(key, Path(where))
    if run_cfg.trainer.out_dir:
        check_writable("trainer.out_dir", Path(run_cfg.trainer.out_dir))
    for key in ("resume", "fork"):   # a checkpoint that is not one fails here, before any folder is made
        where = getattr(run_cfg.trainer, key)
        if where:
            try:
                state = checkpoint.load(checkpoint.find_checkpoint(where))
            except FileNotFoundError as e:
                raise ConfigError(f"trainer.{key}: {e}") from None
            if not isinstance(state, dict) or "model" not in state:
                raise ConfigError(f"trainer.{key}: {where} is not an autofix checkpoint (no model state); valid: a "
                                  "step_*.pt file an autofix run wrote, or the run folder holding it")
    if run_cfg.tracking.enabled:
        check_uri(run_cfg.tracking.uri or default_uri(), reach=launching)
    if run_cfg.remediation.enabled:   # before the parent trains for minutes, not when its children start
        check_storage(run_cfg.remediation.storage)
        check_candidates(run_cfg, interventions.load())
        if launching:
            check_available(run_cfg.launcher)


def task(cfg: DictConfig) -> None:
    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.remediation.enabled:
            # the monitored parent, and child runs when it shows a symptom; a rerun resumes its folder
            hc = HydraConfig.get()
            folder = Path(run_cfg.trainer.out_dir) if run_cfg.trainer.out_dir else run_folder(run_cfg)
            # the folders of --config-dir: the children compose with them as the parent did
            search = [s.path for s in hc.runtime.config_sources if s.provider == "command-line" and s.schema == "file"]
            done = run_experiment(run_cfg, hc.job.config_name, list(hc.overrides.task), folder,
                                  OmegaConf.to_yaml(cfg), search_dirs=search)
            print_summary(done["parent"])
            for symptom, res in done["remediated"].items():
                print(f"{symptom}: verdicts in {res['table']}")
            if done["symptoms"] and not done["remediated"]:
                print(f"symptoms: {', '.join(done['symptoms'])} (no remediation ran)")
            return
        out_dir = run_cfg.trainer.out_dir or HydraConfig.get().runtime.output_dir
        summary = assemble(run_cfg, out_dir, config_text=OmegaConf.to_yaml(cfg)).trainer.fit()
    except (UserError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)


def launch(name: str, args: list[str]) -> int:
    quiet_sacct_warnings()  # a --multirun through hydra/launcher=submitit_slurm polls with sacct
    sys.argv = [f"python -m autofix run conf={name}", *args]
    hydra.main(config_path=str(conf_dir()), config_name=name, version_base=HYDRA_VERSION)(task)()
    return 0
