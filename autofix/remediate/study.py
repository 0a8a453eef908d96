"""The Optuna side of a remediation: where its study is stored, and the sampler and pruner it uses."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from ..config.schema import RunConfig
from ..core.errors import ConfigError


def check_storage(url: str | None) -> None:
    """remediation.storage: empty, sqlite, journal or a database URL SQLAlchemy can parse; checked before
    the parent trains."""
    if url in (None, "", "sqlite", "journal"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError(f"remediation.storage: {url!r} is not a database URL; valid: null (SQLite in the run "
                          "folder), journal, or a URL such as postgresql://user@host/optuna") from None


def storage_for(cfg: RunConfig, folder: Path):
    """Optuna storage: SQLite in the run folder, a journal file there (for shared file systems), or a URL."""
    url = cfg.remediation.storage
    if url in (None, "") and cfg.launcher.name == "slurm":
        url = "journal"  # the orchestrator may itself run as a job on any node: SQLite locks fail on NFS
    if url in (None, "", "sqlite"):
        return f"sqlite:///{folder / 'optuna.db'}"
    if url == "journal":
        return JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    return optuna.storages.RDBStorage(url)


def sampler(cfg: RunConfig):
    r = cfg.remediation
    if r.sampler == "random":
        return optuna.samplers.RandomSampler(seed=r.seed)
    return optuna.samplers.TPESampler(seed=r.seed, n_startup_trials=1)


def pruner(cfg: RunConfig):
    name = cfg.remediation.pruner
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def open_study(cfg: RunConfig, folder: Path, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage_for(cfg, folder), direction="maximize",
                               sampler=sampler(cfg), pruner=pruner(cfg), load_if_exists=True)


def load_study(cfg: RunConfig, folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_for(cfg, folder))
