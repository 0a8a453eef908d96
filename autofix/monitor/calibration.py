"""Detection's calibration: the seed plan (conf/monitor/_calibration.yaml), re-judging recorded checks
with today's detectors, and the bounds a table of alarms is reported with.

A recorded run is the dict scripts/fault_bench.py writes: method, backbone, max_steps and `checks`, the
metrics of each monitor check as the run logged them. Replaying them through the detectors gives the
events the run would raise with today's thresholds, without training again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config.monitor import MonitorConfig
from ..core.errors import ConfigError
from ..core.paths import conf_dir
from ..core.yaml_files import read
from .detectors import Detector

PLAN_FILE = "monitor/_calibration.yaml"


@dataclass(frozen=True)
class SeedPlan:
    calibration: tuple[int, ...]
    held_out: tuple[int, ...]
    burned: dict = field(default_factory=dict)
    reserve_from: int = 0
    variant_seeds: int = 2
    variants: dict = field(default_factory=dict)     # name -> Hydra overrides
    fault_seeds: int = 3
    targets: dict = field(default_factory=dict)
    second_data_for: dict = field(default_factory=dict)   # a variant's data when it is the method's own

    def role(self, seed: int) -> str:
        """'calibration', 'held_out', or 'unplanned' (a seed the plan does not name: it judges nothing)."""
        return "calibration" if seed in self.calibration else "held_out" if seed in self.held_out else "unplanned"


def load_plan(path: Path | None = None) -> SeedPlan:
    path = path or conf_dir() / PLAN_FILE
    raw = read(path, ConfigError, PLAN_FILE) or {}
    cal, held = tuple(int(s) for s in raw.get("calibration", ())), tuple(int(s) for s in raw.get("held_out", ()))
    if set(cal) & set(held):
        raise ConfigError(f"{path}: seeds {sorted(set(cal) & set(held))} are both calibration and held out")
    burned = {int(k): str(v) for k, v in (raw.get("burned") or {}).items()}
    if not set(burned) <= set(cal):
        raise ConfigError(f"{path}: burned seeds {sorted(set(burned) - set(cal))} must be listed under calibration")
    return SeedPlan(cal, held, burned, int(raw.get("reserve_from", 0)), int(raw.get("variant_seeds", 2)),
                    {str(k): list(v) for k, v in (raw.get("variants") or {}).items()},
                    int(raw.get("fault_seeds", 3)), dict(raw.get("targets") or {}),
                    {str(k): str(v) for k, v in (raw.get("second_data_for") or {}).items()})


def detector_set_hash(monitor: MonitorConfig) -> str:
    """12 hex digits naming the detector set: every detector's rules, methods, warm-up and persistence.
    Two tables with the same hash were judged by the same thresholds."""
    spec = {name: asdict(d) for name, d in sorted(monitor.detectors.items())}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def detectors_for(monitor: MonitorConfig, method: str, backbone: str,
                  catalog_ids: dict[str, list[int]] | None = None) -> list[Detector]:
    """Fresh detectors (no streaks, no baselines) for one run, as the monitor builds them at its start."""
    ids = catalog_ids or {}
    dets = [Detector(n, d, ids.get(d.symptom, [])) for n, d in monitor.detectors.items() if d.symptom and d.enabled]
    return [d for d in dets if d.applies_to(method, backbone)]


def replay(checks: list[dict], max_steps: int, detectors: list[Detector]) -> list[dict]:
    """The events `detectors` raise over a run's recorded checks, in the order the monitor would emit them."""
    events = []
    for row in checks:
        step = int(row["step"])
        for det in detectors:
            ev = det.check(step, row, step / max_steps)
            if ev is not None:
                events.append(asdict(ev))
    return events


def first_symptoms(events: list[dict]) -> set[str]:
    """The symptoms named first: the earliest onset (ties allowed), the one the loop would remediate."""
    if not events:
        return set()
    onset = min(e["onset"] for e in events)
    return {e["id"] for e in events if e["onset"] == onset}


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n: 0 in 8 is 0.31 at 95%."""
    from scipy.stats import beta

    if n <= 0:
        return 1.0
    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval on a rate seen k times in n."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)
