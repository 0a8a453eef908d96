"""The monitor's metric group read from its kNN probes on the validation split: the probe against its
best (overfitting) and against the untrained encoder (training that destroys), and the backbone's
stages from the same forwards (redundant or degraded layers)."""
from __future__ import annotations

import math

from . import stages

NAN = float("nan")


class KnnSignals:
    def __init__(self, bank: int, queries: int):
        self.bank, self.queries = bank, queries
        self.best_knn, self.loss_at_best = float("-inf"), NAN
        self.knn_start = NAN      # the probe before any step (runs from scratch only)
        self.knn_origin = NAN     # the same, or for a forked child its parent's: knn_gain's zero
        self.stage_features: list = []                     # the stages' pooled outputs at the last probe
        self.stage_knn_start: list[float] | None = None     # each stage's kNN before any step

    def start(self, trainer) -> None:
        """A run from scratch probes its untrained encoder, the zero its gains are measured from."""
        if trainer.step == 0 and math.isnan(self.knn_start):
            self.knn_start = self.knn_origin = self._knn(trainer)
            self.stage_metrics(trainer)   # keeps the stages' probe at the start

    def _knn(self, trainer) -> float:
        """The monitor's kNN probe (its own bank and queries, cheaper than the run's). The stages' pooled
        outputs of the same forwards are kept for the layer-wise metrics."""
        with stages.StageRecorder(trainer.model.backbone) as rec:
            knn = trainer.probe(max_train=self.bank, max_val=self.queries)["probe/knn"]
        self.stage_features = rec.features()
        return knn

    def measure(self, trainer, window: list[float], every: int, first_loss: float) -> dict[str, float]:
        """The probe falling from its best while the loss still improves is overfitting."""
        recent_losses = window[-every:]
        knn = self._knn(trainer)
        loss = sum(recent_losses) / max(len(recent_losses), 1)
        if self.best_knn == float("-inf") and not math.isnan(self.knn_start):
            # a run from scratch is also judged against its starting point: a shortcut can pull the
            # probe down before the first check
            self.best_knn, self.loss_at_best = self.knn_start, first_loss
        if knn > self.best_knn:
            self.best_knn, self.loss_at_best = knn, loss
        # health/knn: the monitor's cheaper probe (its own bank); probe/knn is the run's full probe.
        # loss_gain_since_best: the share of the loss removed since the best probe, > 0 while the
        # pretext task still improves
        # knn_gain: against the untrained encoder (NaN for a run that neither started at step 0 nor
        # inherited its parent's start): below 0, training destroyed more than it taught
        return {"health/knn": knn, "health/knn_drop": self.best_knn - knn,
                "health/knn_gain": knn - self.knn_origin,
                "health/loss_gain_since_best": (self.loss_at_best - loss) / abs(self.loss_at_best or 1.0)}

    def stage_metrics(self, trainer) -> dict[str, float]:
        feats = self.stage_features
        if len(feats) < 2:
            return {}
        _, bank_y, _, val_y = trainer.probe_split(self.bank, self.queries)
        p = trainer.cfg.probe
        knn = stages.stage_knn(feats, len(bank_y), bank_y.to(feats[0].device), val_y.to(feats[0].device),
                               p.knn_k, p.knn_temperature, trainer.data.num_classes)
        if self.stage_knn_start is None and trainer.step == 0:
            self.stage_knn_start = knn
        # CKA on the bank's rows only: the queries are another split, and 512 rows are plenty
        bank = [f[:len(bank_y)] for f in feats]
        return stages.stage_metrics(bank, knn, self.stage_knn_start)

    def state_dict(self) -> dict:
        return {"best_knn": self.best_knn, "loss_at_best": self.loss_at_best, "knn_start": self.knn_start,
                "knn_origin": self.knn_origin, "stage_knn_start": self.stage_knn_start}

    def load_state_dict(self, state: dict) -> None:
        self.best_knn, self.loss_at_best = state["best_knn"], state["loss_at_best"]
        self.knn_start, self.knn_origin = state["knn_start"], state["knn_origin"]
        self.stage_knn_start = state["stage_knn_start"]

    def inherit(self, parent_state: dict) -> None:
        """A forked child keeps its parent's probe of the untrained encoder: "worse than at the start"
        means the run's start, not the fork's (the best probe restarts at the fork)."""
        if math.isnan(self.knn_origin):
            self.knn_origin = parent_state.get("knn_origin", NAN)
        if self.stage_knn_start is None:
            self.stage_knn_start = parent_state.get("stage_knn_start")
