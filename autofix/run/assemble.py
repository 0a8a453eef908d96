"""The one place a run is put together: a validated config becomes a trainer with its monitor hook.
The CLI, the remediation's parent and every child build their run here, so the three cannot drift
apart; each adds its own hooks (fork points, progress records) to `trainer.hooks` before `fit`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config.schema import RunConfig
from ..monitor.health import HealthMonitor, build_monitor
from .trainer import Trainer


@dataclass
class Run:
    trainer: Trainer
    monitor: HealthMonitor | None      # None when monitor.enabled is false


def assemble(cfg: RunConfig, out_dir: str | Path, config_text: str | None = None) -> Run:
    hooks = build_monitor(cfg.monitor)   # validated before the data loads and the model is built
    trainer = Trainer(cfg, out_dir, hooks=hooks, config_text=config_text)
    return Run(trainer, hooks[0] if hooks else None)
