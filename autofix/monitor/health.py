"""The health monitor: a trainer hook that measures the run every `every` steps and runs the
detectors over the metrics. It schedules three metric groups, each with its own state:
`TrainingSignals` (loss, gradients, weights: every check), `EmbeddingSignals` (the probe buffer
embedded: every `geometry_every` steps and at the run's last check) and `KnnSignals` (the validation
probe and the stages: every `knn_every` steps). It never changes training: checks run under a forked
RNG and in eval mode, and the train-mode BatchNorm check freezes running statistics."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from reference_models.methods.mae import MAE
from reference_models.names import BACKBONE_NAMES, METHOD_NAMES

from ..config.monitor import MonitorConfig
from ..core.errors import ConfigError
from ..core.progress import console
from ..knowledge.links import catalog_ids
from .buffer import ProbeBuffer
from .detectors import Detector, Symptom
from .embedding_signals import EmbeddingSignals
from .knn_signals import KnnSignals
from .training_signals import TrainingSignals


class HealthMonitor:
    """A trainer hook (see autofix.run.trainer.Hook)."""

    def __init__(self, cfg: MonitorConfig, catalog_ids: dict[str, list[int]] | None = None):
        self.cfg = cfg
        self.catalog_ids = catalog_ids or {}
        self.detectors: list[Detector] = []
        self.events: list[Symptom] = []
        self.last_metrics: dict[str, float] = {}
        self.embed_last_check = True        # off only where a benchmark times the embedding apart
        self.training = TrainingSignals(cfg.every, cfg.loss_window)
        self.knn = KnnSignals(cfg.knn_bank, cfg.knn_queries)

    # ---- hook interface -------------------------------------------------------------------------
    def on_start(self, trainer) -> None:
        model = trainer.model
        self.method, self.device = trainer.cfg.method.name, trainer.device
        self.detectors = [Detector(name, d, self.catalog_ids.get(d.symptom, []))
                          for name, d in self.cfg.detectors.items() if d.symptom and d.enabled]
        self.detectors = [d for d in self.detectors if d.applies_to(self.method, trainer.cfg.model.backbone)]
        buffer = ProbeBuffer(trainer.data.train_x, self.cfg.probe_size, self.cfg.probe_seed, trainer.normalize,
                             trainer.device, self.cfg.noise_std, self.cfg.lowres_scale, self.cfg.shift_frac)
        self.training.start(model)
        self.embedding = EmbeddingSignals(buffer, model, self.cfg.probe_seed)
        self.out_dir = Path(trainer.out_dir)
        if self.cfg.knn_every:
            self.knn.start(trainer)

    def after_step(self, trainer, out) -> None:
        self.training.after_step(trainer.model, out.loss)
        if trainer.step % self.cfg.every == 0:
            self.embedding.note_training_views(out)
            self.check(trainer)

    def on_end(self, trainer) -> None:
        if trainer.step % self.cfg.every:
            self.check(trainer)

    # ---- a check --------------------------------------------------------------------------------
    def check(self, trainer) -> None:
        # the run's last check embeds whatever the cadence: its verdict (a child's "resolved") reads all
        due = not self.cfg.geometry_every or trainer.step % self.cfg.geometry_every == 0
        geometry = due or (self.embed_last_check and trainer.step >= trainer.last_step)
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            metrics = self.measure(trainer, geometry=geometry)
        trainer.log(metrics)
        self.last_metrics = metrics
        for det in self.detectors:
            symptom = det.check(trainer.step, metrics, trainer.step / trainer.cfg.trainer.max_steps)
            if symptom is not None:
                self.emit(trainer, symptom)

    def measure(self, trainer, geometry: bool = True) -> dict[str, float]:
        """One check's metrics. Without `geometry` the probe buffer is not embedded: the detectors that
        read embedding metrics skip that check (their persistence counts the checks that have them)."""
        model = trainer.model
        m = self.training.measure(model)
        was_training = model.training
        model.eval()
        if isinstance(model, MAE):
            m.update(self.embedding.mae_metrics(model))
        if geometry:
            m.update(self.embedding.measure(model, self.method, trainer.cfg.method, trainer.cfg.trainer.batch_size,
                                                trainer.step))
        else:
            self.embedding.train_views = {}
        if self.cfg.knn_every and trainer.step % self.cfg.knn_every == 0:
            m.update(self.knn.measure(trainer, self.training.window, self.cfg.every, self.training.first_loss))
            # at the kNN probe's cadence: two small forward passes, read by no detector that needs them often
            m.update(self.embedding.perturbation_sensitivity(model))
            m.update(self.knn.stage_metrics(trainer))
        model.train(was_training)
        return m

    def state(self, symptom: str) -> tuple[bool, float]:
        """Whether `symptom`'s condition held at the latest check (any of its detectors), and how badly."""
        dets = [d for d in self.detectors if d.cfg.symptom == symptom]
        return (any(bool(d.last_hit) for d in dets), max((d.last_severity for d in dets if d.last_hit), default=0.0))

    def judged(self, symptom: str) -> bool:
        """Whether any of `symptom`'s detectors has judged a check yet (past its warm-up, its metrics
        measured): a child too short for that cannot count the symptom as resolved."""
        return any(d.last_hit is not None for d in self.detectors if d.cfg.symptom == symptom)

    def healthy(self) -> bool:
        """No detector's condition held at the latest check."""
        return not any(d.last_hit for d in self.detectors)

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Saved with each checkpoint, so that a resumed run (a requeued SLURM child, a killed parent)
        judges its next checks against the same baselines, windows and streaks as before the stop."""
        return {"training": self.training.state_dict(), "embedding": self.embedding.state_dict(),
                "knn": self.knn.state_dict(), "last_metrics": dict(self.last_metrics),
                "events": [asdict(e) for e in self.events],
                "detectors": {d.name: d.state_dict() for d in self.detectors}}

    def load_state_dict(self, state: dict) -> None:
        """Called after on_start (which built the detectors and the probe buffer). Checkpoints load onto
        the CPU; the tensors move to the run's device."""
        self.training.load_state_dict(state["training"], self.device)
        self.embedding.load_state_dict(state["embedding"], self.device)
        self.knn.load_state_dict(state["knn"])
        self.last_metrics = dict(state["last_metrics"])
        self.events = [Symptom(**e) for e in state["events"]]
        fired = {e.detector: e for e in self.events}
        for d in self.detectors:
            if d.name in state["detectors"]:
                d.load_state_dict(state["detectors"][d.name], fired.get(d.name))

    def inherit(self, parent_state: dict) -> None:
        """A forked child keeps the references of its parent's start (the untrained encoder's probe, BYOL's
        online network at init); everything else, the best probe included, restarts at the fork."""
        self.knn.inherit(parent_state.get("knn", {}))
        self.embedding.inherit(parent_state.get("embedding", {}))

    # ---- events ---------------------------------------------------------------------------------
    def emit(self, trainer, symptom: Symptom) -> None:
        self.events.append(symptom)
        worst = max(symptom.evidence.items(), key=lambda kv: kv[1]["severity"])
        console.print(f"[bold red]symptom[/] {symptom.id} at step {symptom.step} (onset {symptom.onset}, "
                      f"severity {symptom.severity:.2f}): {worst[0]} = {worst[1]['value']:.4g} "
                      f"{worst[1]['op']} {worst[1]['threshold']:.4g}; catalog {_some(symptom.catalog_ids)}")
        trainer.tracker.set_tags({f"autofix.symptom.{symptom.id}": str(symptom.step)})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "symptoms.jsonl"
        with path.open("a") as f:
            f.write(json.dumps(asdict(symptom)) + "\n")
        trainer.tracker.log_artifact(path)
        if self.cfg.stop_on_symptom:
            trainer.should_stop = True


def _some(ids: list[int], n: int = 8) -> str:
    return ", ".join(map(str, ids[:n])) + (f" ... ({len(ids)} entries)" if len(ids) > n else "")


def build_monitor(cfg: MonitorConfig) -> list:
    """The hooks a run gets from its monitor config: none when disabled (zero cost), else one monitor
    whose detectors are checked against the symptom list."""
    if not cfg.enabled:
        return []
    ids = catalog_ids()
    if cfg.geometry_every % cfg.every:
        raise ConfigError(f"monitor.geometry_every: {cfg.geometry_every} is not a multiple of monitor.every "
                          f"({cfg.every}); valid: 0 (every check) or a multiple of {cfg.every}")
    if cfg.knn_every % cfg.every:
        raise ConfigError(f"monitor.knn_every: {cfg.knn_every} is not a multiple of monitor.every ({cfg.every}); "
                          f"valid: 0 (off) or a multiple of {cfg.every}")
    for name, d in cfg.detectors.items():
        if d.symptom not in ids:
            raise ConfigError(f"monitor.detectors.{name}.symptom: {d.symptom!r} is not a symptom; "
                              f"valid: {', '.join(ids)}")
        for key, valid in (("methods", METHOD_NAMES), ("backbones", BACKBONE_NAMES)):
            bad = [v for v in getattr(d, key) if v not in valid]
            if bad:
                raise ConfigError(f"monitor.detectors.{name}.{key}: {', '.join(map(repr, bad))} unknown; "
                                  f"valid: {', '.join(valid)}")
    return [HealthMonitor(cfg, ids)]
