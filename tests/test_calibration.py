"""The calibration helpers: the seed plan, replaying checks, the first symptom, and the bounds (known answers)."""
from __future__ import annotations

import dataclasses

import pytest

from autofix.config.compose import compose
from autofix.config.convert import to_run_config
from autofix.config.monitor import DetectorConfig, RuleConfig
from autofix.core.errors import ConfigError
from autofix.monitor.calibration import detector_set_hash, detectors_for, first_symptoms, interval, load_plan, replay, upper_bound
from autofix.monitor.detectors import Detector


def test_upper_bound_known_values():
    assert upper_bound(0, 8) == pytest.approx(1 - 0.05 ** (1 / 8))   # 0 in 8: 0.312, not zero
    assert upper_bound(0, 8) == pytest.approx(0.3123, abs=1e-4)
    assert upper_bound(1, 60) == pytest.approx(0.0766, abs=1e-3)      # the target: one alarm in 60
    assert upper_bound(0, 60) == pytest.approx(1 - 0.05 ** (1 / 60))
    assert upper_bound(5, 5) == 1.0 and upper_bound(0, 0) == 1.0


def test_interval_known_values():
    lo, hi = interval(3, 3)
    assert lo == pytest.approx(0.025 ** (1 / 3)) and hi == 1.0          # 3 in 3: [0.29, 1]
    lo, hi = interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = interval(5, 10)
    assert lo == pytest.approx(1 - hi) and 0.18 < lo < 0.19


def test_first_symptoms_takes_the_earliest_onset_with_ties():
    ev = [{"id": "a", "onset": 40}, {"id": "b", "onset": 20}, {"id": "c", "onset": 20}]
    assert first_symptoms(ev) == {"b", "c"}
    assert first_symptoms([]) == set()


def test_the_shipped_plan_keeps_the_roles_apart():
    plan = load_plan()
    assert plan.calibration and len(plan.held_out) >= 5
    assert not set(plan.calibration) & set(plan.held_out)
    assert set(plan.burned) <= set(plan.calibration)
    assert all(s >= plan.reserve_from or s in plan.held_out for s in plan.held_out)
    assert plan.reserve_from > max(plan.held_out)
    assert plan.role(plan.calibration[0]) == "calibration" and plan.role(plan.held_out[0]) == "held_out"
    assert plan.role(-1) == "unplanned"
    runs = len(plan.held_out) + plan.variant_seeds * len(plan.variants)
    assert 4 * runs >= plan.targets["healthy_runs"] >= 60


@pytest.mark.parametrize("text, says", [
    ("calibration: [0, 1]\nheld_out: [1, 2]\n", "both calibration and held out"),
    ("calibration: [0]\nheld_out: [2]\nburned: {2: looked}\n", "must be listed under calibration"),
    ("calibration: [0\n", "malformed YAML"),
])
def test_a_broken_plan_is_one_line(tmp_path, text, says):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_plan(path)


def _det(value=0.5, persistence=2):
    return DetectorConfig(symptom="s", methods=["vicreg"], warmup=0, persistence=persistence,
                          rules=[RuleConfig(metric="m", op=">", value=value)])


def test_replay_matches_a_live_detector_and_starts_fresh():
    checks = [{"step": s, "m": v} for s, v in ((20, 0.1), (40, 0.9), (60, 0.9), (80, 0.1))]
    live = Detector("d", _det())
    live_events = [dataclasses.asdict(e) for row in checks if (e := live.check(row["step"], row, row["step"] / 100))]
    dets = [Detector("d", _det())]
    assert replay(checks, 100, dets) == live_events
    assert [e["step"] for e in live_events] == [60] and live_events[0]["onset"] == 40
    assert replay(checks, 100, [Detector("d", _det(value=0.95))]) == []   # a looser threshold: no event


def test_detector_set_hash_names_the_thresholds():
    monitor = to_run_config(compose("vicreg", [])).monitor
    same = to_run_config(compose("vicreg", [])).monitor
    assert detector_set_hash(monitor) == detector_set_hash(same)
    name = next(iter(monitor.detectors))
    rule = monitor.detectors[name].rules[0]
    rule.value = rule.value * 1.01 + 1e-6
    assert detector_set_hash(monitor) != detector_set_hash(same)


def test_detectors_for_takes_the_method_and_backbone_filters():
    monitor = to_run_config(compose("vicreg", [])).monitor
    vicreg = {d.name for d in detectors_for(monitor, "vicreg", "tiny_convnet")}
    mae = {d.name for d in detectors_for(monitor, "mae", "vit_tiny")}
    assert "collapse_shrink" in vicreg and "collapse_shrink" not in mae
    assert all(monitor.detectors[n].enabled and "mae" in monitor.detectors[n].methods for n in mae)
