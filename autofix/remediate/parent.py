"""The parent run of a remediation: trained with its monitor and a hook that keeps the checkpoints a
child may fork from; its record (parent.json) is what the children and the verdicts read."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..config.schema import RunConfig
from ..run.assemble import assemble


class ForkPoints:
    """A trainer hook beside the monitor: keeps the checkpoints a child may fork from (step 0, the last
    check where no detector's condition held, and each symptom's onset) out of the ring's rotation."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.healthy: list[int] = []

    def on_start(self, trainer) -> None:
        if trainer.step == 0:
            trainer.ring.pin(0)
            trainer.save()

    def after_step(self, trainer, out) -> None:
        if trainer.step % self.monitor.cfg.every:
            return
        for e in self.monitor.events:
            trainer.ring.pin(e.onset)
        if self.monitor.healthy() and not self.monitor.events:  # after a symptom the fork point stays put
            previous = self.healthy[-1] if self.healthy else 0
            self.healthy.append(trainer.step)
            trainer.ring.pin(trainer.step)
            if previous:  # step 0 stays pinned for fork=scratch
                trainer.ring.pinned.discard(previous)

    def on_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {"healthy": list(self.healthy)}

    def load_state_dict(self, state: dict) -> None:
        self.healthy = list(state["healthy"])


def train_parent(cfg: RunConfig, folder: Path, config_text: str | None = None) -> dict:
    """Train the parent in `folder`/parent (or resume it, or read it back when it already finished)."""
    record = folder / "parent.json"
    if record.is_file():
        return json.loads(record.read_text())
    cfg.monitor.stop_on_symptom = cfg.remediation.enabled and cfg.remediation.parent == "stop"
    cfg.trainer.ckpt_every = cfg.monitor.every  # every check leaves a checkpoint a child can fork from
    cfg.trainer.ckpt_keep = max(cfg.trainer.ckpt_keep, 3)
    cfg.tracking.tags = {**cfg.tracking.tags, "autofix.role": "parent"}
    pdir = folder / "parent"
    if (pdir / "checkpoints").is_dir() and any((pdir / "checkpoints").glob("step_*.pt")):
        cfg.trainer.resume = str(pdir)  # a parent interrupted mid-training continues
    run = assemble(cfg, pdir, config_text=config_text)
    trainer, monitor = run.trainer, run.monitor
    forks = ForkPoints(monitor) if monitor else None
    if forks:
        trainer.hooks.append(forks)
    summary = trainer.fit()
    events = [asdict(e) for e in monitor.events] if monitor else []
    keep = ("health/knn",) + tuple({r.metric for d in cfg.monitor.detectors.values() for r in d.rules})
    history = [{k: v for k, v in row.items() if k == "step" or k in keep} for row in trainer.history]
    out = {"summary": summary, "events": events, "healthy_steps": forks.healthy if forks else [],
           "checkpoints": str(trainer.ring.folder), "history": [h for h in history if len(h) > 1],
           "max_steps": cfg.trainer.max_steps}
    record.write_text(json.dumps(out, indent=1, default=str))
    return out


def fork_step(cfg: RunConfig, parent: dict, event: dict) -> int:
    """Where the children of `event` start: step 0, the symptom's onset, or the last healthy check before it."""
    mode = cfg.remediation.fork
    if mode == "scratch":
        return 0
    if mode == "onset":
        return int(event["onset"])
    healthy = [s for s in parent["healthy_steps"] if s < event["onset"]]
    return max(healthy) if healthy else 0
