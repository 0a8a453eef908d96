"""Detectors: rules over the metric history that name a symptom. Thresholds, persistence, warm-up
and the methods a rule applies to are data (conf/monitor/); this module only evaluates them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from ..config.monitor import DetectorConfig


@dataclass
class Symptom:
    """A detector's verdict that a run shows a canonical failure."""
    id: str
    detector: str
    step: int                            # when it fired (after persistence)
    onset: int                           # first check of the streak that fired
    severity: float                      # 0..1: how far past its threshold, worst rule
    evidence: dict[str, dict]            # metric -> {value, threshold, op}
    catalog_ids: list[int] = field(default_factory=list)
    resolved_at: Optional[int] = None    # first later check where the condition no longer held


def _exceeds(value: float, op: str, threshold: float) -> bool:
    if op == "nonfinite":
        return not math.isfinite(value)
    if not math.isfinite(value):
        return False  # a NaN metric is the divergence detector's business, not every detector's
    return {"<": value < threshold, "<=": value <= threshold, ">": value > threshold,
            ">=": value >= threshold}[op]


def _severity(value: float, op: str, threshold: float) -> float:
    """Distance past the threshold, relative to it, in [0, 1]."""
    if op == "nonfinite" or not math.isfinite(value):
        return 1.0
    scale = abs(threshold) if threshold else 1.0
    past = (threshold - value) if op in ("<", "<=") else (value - threshold)
    return max(0.0, min(1.0, past / scale))


class Detector:
    """Evaluates one DetectorConfig at each check; remembers its streak and baseline."""

    def __init__(self, name: str, cfg: DetectorConfig, catalog_ids: list[int] | None = None):
        self.name, self.cfg, self.catalog_ids = name, cfg, list(catalog_ids or [])
        self.streak, self.streak_start = 0, None
        self.baseline: dict[str, float] = {}
        self.fired: Symptom | None = None
        self.last_hit: bool | None = None    # the condition at the latest check it was judged (None: not yet)
        self.last_severity = 0.0

    def state_dict(self) -> dict:
        """What a resumed run needs to judge the next check as if it had never stopped (the fired
        symptom itself is kept by the monitor's event list)."""
        return {"streak": self.streak, "streak_start": self.streak_start, "baseline": dict(self.baseline),
                "last_hit": self.last_hit, "last_severity": self.last_severity}

    def load_state_dict(self, state: dict, fired: Symptom | None = None) -> None:
        self.streak, self.streak_start = state["streak"], state["streak_start"]
        self.baseline, self.last_hit = dict(state["baseline"]), state["last_hit"]
        self.last_severity, self.fired = state["last_severity"], fired

    def applies_to(self, method: str, backbone: str | None = None) -> bool:
        return self.cfg.enabled and method in self.cfg.methods and (backbone is None or backbone in self.cfg.backbones)

    def holds(self, latest: dict[str, float]) -> tuple[bool, dict[str, dict]] | None:
        """Whether the condition holds on the latest values; None if a metric it needs is missing."""
        results, evidence = [], {}
        for rule in self.cfg.rules:
            if rule.metric not in latest:
                if self.cfg.combine == "all":
                    return None
                continue  # with "any", a metric this run does not have (no tanh units, say) is skipped
            value = latest[rule.metric]
            if rule.relative:
                base = self.baseline.setdefault(rule.metric, value)
                threshold = rule.value * base
            else:
                threshold = rule.value
            hit = _exceeds(value, rule.op, threshold)
            results.append(hit)
            evidence[rule.metric] = {"value": value, "op": rule.op, "threshold": threshold, "hit": hit,
                                     "severity": _severity(value, rule.op, threshold) if hit else 0.0}
        if not results:
            return None
        combined = any(results) if self.cfg.combine == "any" else all(results)
        return combined, evidence

    def check(self, step: int, latest: dict[str, float], progress: float = 0.0) -> Symptom | None:
        """Called at every monitor check; returns a Symptom the first time the condition has held for
        `persistence` checks in a row after warm-up, and marks an earlier one resolved when it stops."""
        if step < self.cfg.warmup or not self.cfg.min_progress <= progress <= self.cfg.max_progress:
            return None
        result = self.holds(latest)
        if result is None:
            return None
        hit, evidence = result
        self.last_hit = hit
        self.last_severity = max((e["severity"] for e in evidence.values() if e["hit"]), default=0.0)
        if not hit:
            self.streak, self.streak_start = 0, None
            if self.fired is not None and self.fired.resolved_at is None:
                self.fired.resolved_at = step
            return None
        if self.fired is not None:
            if self.fired.resolved_at is not None:  # it came back: keep the first event, note recurrence
                self.fired.resolved_at = None
            return None
        self.streak += 1
        self.streak_start = step if self.streak_start is None else self.streak_start
        if self.streak < self.cfg.persistence:
            return None
        severity = max((e["severity"] for e in evidence.values() if e["hit"]), default=0.0)
        self.fired = Symptom(self.cfg.symptom, self.name, step, self.streak_start, severity,
                             {k: v for k, v in evidence.items()}, self.catalog_ids)
        return self.fired
