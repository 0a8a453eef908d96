"""Detectors fire on histories that hold their condition, stay quiet otherwise, and respect
persistence, warm-up, relative baselines and the methods they apply to."""
import math

from autofix.config.monitor import DetectorConfig, RuleConfig
from autofix.monitor.detectors import Detector


def run(detector, values, metric="m", every=10):
    events = []
    for i, v in enumerate(values, start=1):
        ev = detector.check(i * every, {metric: v})
        if ev:
            events.append(ev)
    return events


def collapse(**kw):
    return Detector("collapse", DetectorConfig(symptom="complete_collapse",
                                               rules=[RuleConfig(metric="m", op="<", value=0.1)], **kw), [3, 12])


def test_fires_after_persistence_with_onset_and_evidence():
    det = collapse(persistence=3)
    (ev,) = run(det, [0.5, 0.05, 0.04, 0.03, 0.02])
    assert (ev.step, ev.onset) == (40, 20)
    assert ev.id == "complete_collapse" and ev.catalog_ids == [3, 12]
    assert ev.evidence["m"]["value"] == 0.03 and ev.evidence["m"]["threshold"] == 0.1
    assert 0.6 < ev.severity <= 1.0


def test_quiet_on_a_healthy_history_and_when_streak_breaks():
    assert run(collapse(persistence=2), [0.5, 0.4, 0.3, 0.6]) == []
    assert run(collapse(persistence=3), [0.05, 0.05, 0.5, 0.05, 0.05, 0.5]) == []


def test_warmup_grace():
    det = collapse(persistence=1, warmup=35)
    (ev,) = run(det, [0.0, 0.0, 0.0, 0.0])
    assert ev.step == 40


def test_progress_window_judges_only_its_share_of_the_run():
    det = collapse(persistence=1, min_progress=0.5, max_progress=0.8)
    assert det.check(10, {"m": 0.0}, 0.4) is None and det.last_hit is None   # before it: not judged
    assert det.check(20, {"m": 0.0}, 0.5) is not None                        # judged from 50% on
    late = collapse(persistence=1, min_progress=0.5, max_progress=0.8)
    assert late.check(30, {"m": 0.0}, 0.9) is None and late.last_hit is None  # after it: not judged


def test_fires_once_and_records_resolution():
    det = collapse(persistence=1)
    events = run(det, [0.05, 0.05, 0.5, 0.5])
    assert len(events) == 1 and det.fired.resolved_at == 30


def test_relative_rule_uses_the_first_value_after_warmup_as_baseline():
    det = Detector("rank_drop", DetectorConfig(symptom="dimensional_collapse", warmup=15, persistence=2,
                                               rules=[RuleConfig(metric="m", op="<", value=0.5, relative=True)]))
    # the value at step 10 is in warm-up; baseline = 20 (step 20); fires below 10
    (ev,) = run(det, [100.0, 20.0, 15.0, 9.0, 8.0])
    assert ev.step == 50 and ev.evidence["m"]["threshold"] == 10.0


def test_nonfinite_rule_and_nan_does_not_trip_other_rules():
    div = Detector("nan", DetectorConfig(symptom="divergence", persistence=1,
                                         rules=[RuleConfig(metric="m", op="nonfinite")]))
    assert run(div, [1.0, math.nan])[0].step == 20
    assert run(collapse(persistence=1), [math.nan, math.nan]) == []


def test_all_combination_needs_every_rule_and_missing_metrics_skip():
    det = Detector("both", DetectorConfig(symptom="x", combine="all", persistence=1, rules=[
        RuleConfig(metric="a", op=">", value=1.0), RuleConfig(metric="b", op="<", value=0.0)]))
    assert det.check(10, {"a": 2.0, "b": 1.0}) is None
    assert det.check(20, {"a": 2.0}) is None  # b missing: no verdict either way
    assert det.check(30, {"a": 2.0, "b": -1.0}).step == 30


def test_methods_filter():
    det = collapse(methods=["byol"])
    assert det.applies_to("byol") and not det.applies_to("mae")


def _beyond(rule, inside: bool) -> float:
    """A value that holds the rule's condition (inside) or clearly does not."""
    v = rule.value
    step = max(abs(v), 1.0)
    if rule.op == ">":
        return v + step if inside else v - step
    if rule.op == "<":
        return v - step if inside else v + step
    raise AssertionError(f"no synthetic value for op {rule.op!r}")


def test_every_shipped_detector_fires_on_its_condition_and_stays_quiet_beside_it():
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config

    detectors = to_run_config(compose("vicreg", [])).monitor.detectors
    assert "feature_norm" in detectors and "overfitting" in detectors
    for name, cfg in detectors.items():
        rules = [r for r in cfg.rules if r.op in (">", "<")]
        assert rules, name
        first = rules if cfg.combine == "all" else rules[:1]   # one rule of "any" is enough
        sick = {r.metric: _beyond(r, True) for r in first}
        well = {r.metric: _beyond(r, False) for r in rules}
        steps = [cfg.warmup + 10 * (i + 1) for i in range(cfg.persistence + 1)]
        progress = max(0.1, cfg.min_progress)
        det = Detector(name, cfg)
        events = [det.check(s, sick, progress) for s in steps]
        fired = [e for e in events if e is not None]
        assert len(fired) == 1 and fired[0].step == steps[cfg.persistence - 1], name
        quiet = Detector(name, cfg)
        assert all(quiet.check(s, well, progress) is None for s in steps), name
