"""Verdict statistics on per-seed results whose answer is known."""
import math

import pytest

from autofix.remediate import verdict as V


def test_paired_interval_matches_a_hand_computed_t_interval():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.302653
    iv = V.paired_interval({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.5, 2: 0.5})
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (iv.mean, iv.n) == (pytest.approx(0.2), 3)
    assert iv.low == pytest.approx(0.2 - half, rel=1e-5) and iv.high == pytest.approx(0.2 + half, rel=1e-5)


def test_paired_interval_uses_only_shared_finite_seeds():
    iv = V.paired_interval({0: 0.9, 1: float("nan"), 2: 0.8}, {0: 0.5, 2: 0.4, 3: 0.1})
    assert iv.n == 2 and iv.mean == pytest.approx(0.4)
    one = V.paired_interval({0: 0.9}, {0: 0.5})
    assert one.n == 1 and math.isnan(one.low) and not one.excludes_zero_above()


def _arm(knn, resolved=True):
    return V.Arm(knn=dict(enumerate(knn)), resolved={i: resolved for i in range(len(knn))})


def test_helped_needs_both_arms_beaten_and_the_symptom_resolved():
    control, random = _arm([0.30, 0.32, 0.31]), _arm([0.40, 0.38, 0.41])
    assert V.decide("fix", _arm([0.80, 0.82, 0.81]), control, random).verdict == V.HELPED
    # beats the control but not the random arm: no kNN gain that counts, only the alarm silenced
    assert V.decide("meh", _arm([0.41, 0.39, 0.40]), control, random).verdict == V.RESOLVED_NO_GAIN
    # beats both but the detector still fires at the end: half a fix, named as such
    assert V.decide("masks", _arm([0.80, 0.82, 0.81], resolved=False), control, random).verdict == V.GAIN_UNRESOLVED
    # silences the detector without a kNN gain
    assert V.decide("quiet", _arm([0.30, 0.33, 0.31]), control, random).verdict == V.RESOLVED_NO_GAIN
    assert V.decide("none", _arm([0.30, 0.33, 0.31], resolved=False), control, random).verdict == V.NO_EFFECT


def test_hurt_and_incomplete():
    control = _arm([0.80, 0.81, 0.82])
    assert V.decide("bad", _arm([0.50, 0.52, 0.49]), control, None).verdict == V.HURT
    assert V.decide("one", _arm([0.90]), control, None).verdict == V.INCOMPLETE


def _diverging(knn: dict, diverged: set):
    return V.Arm(knn=dict(knn), resolved={**{s: True for s in knn}, **{s: False for s in diverged}}, diverged=set(diverged))


def test_a_diverged_child_is_an_outcome_not_a_zero():
    """Seeds that diverged carry no kNN: they are counted as diverged and not resolved, never averaged in as 0."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    def trial(role, seed, state, value=None, **ua):
        return SimpleNamespace(state=state, value=value, params={}, user_attrs={"role": role, "seed": seed, **ua})
    trials = [trial("control", 0, TrialState.COMPLETE, 0.5, resolved=False),
              trial("control", 1, TrialState.FAIL, outcome=V.DIVERGED, resolved=False, fail_reason="diverged: ..."),
              trial("control", 2, TrialState.FAIL, fail_reason="killed by signal 9")]
    control, _, _ = V.arms_from_trials(trials)
    assert control.knn == {0: 0.5} and control.diverged == {1} and control.failed == 1
    assert control.seeds == 2 and control.resolved_rate == 0.0 and control.diverged_text() == "1/2"
    rows = V.table([], control, None)
    assert rows[0]["kNN"] == "0.500" and rows[0]["diverged"] == "1/2"   # the mean is over the seed that trained


def test_an_arm_that_diverges_more_or_less_often_than_the_control_is_named_for_it():
    control = _diverging({0: 0.5, 1: 0.5, 2: 0.5}, set())
    # better kNN on the seeds it trained, yet it broke one run in four: named for the divergence
    breaks = V.decide("breaks", _diverging({0: 0.9, 1: 0.9, 2: 0.9}, {3}), control, None)
    assert breaks.verdict == V.MORE_DIVERGED and breaks.diverged == "1/4" and breaks.knn == pytest.approx(0.9)
    # a control that always diverges leaves no kNN to pair with: a fix that trains is named for that
    diverging = _diverging({}, {0, 1, 2})
    assert V.decide("steadies", _diverging({0: 0.6, 1: 0.6, 2: 0.6}, set()), diverging, None).verdict == V.FEWER_DIVERGED
    assert V.decide("same", _diverging({}, {0, 1, 2}), diverging, None).verdict == V.INCOMPLETE
    # as often as the control, with seeds to compare: judged on its kNN as usual
    assert V.decide("fix", _diverging({0: 0.8, 1: 0.82, 2: 0.81}, set()), control, None).verdict == V.HELPED


def test_tables_render():
    control, random = _arm([0.3, 0.3]), _arm([0.4, 0.5])
    rows = V.table([V.decide("fix", _arm([0.8, 0.9]), control, random)], control, random)
    assert [r["intervention"] for r in rows] == ["control (no patch)", "random patch", "fix"]
    md = V.markdown(rows)
    assert md.count("\n") == 4 and "| fix |" in md
    assert "<table" in V.html(rows, "t")


def test_promotion_takes_the_best_of_each_family_before_a_second_of_any():
    from autofix.remediate.plan import promotion
    ranked = ["adamw", "radam", "lars", "warmup", "clip", "lr_lower"]
    family = {"adamw": "optimizer", "radam": "optimizer", "lars": "optimizer", "warmup": "warmup",
              "clip": "clipping", "lr_lower": "lr"}
    assert promotion(ranked, 3, family) == ["adamw", "warmup", "clip"]
    assert promotion(ranked, 3) == ["adamw", "radam", "lars"]              # by score alone
    assert promotion(["adamw", "radam", "warmup"], 3, family) == ["adamw", "warmup", "radam"]  # families ran out
    assert promotion(ranked, 0, family) == []


@pytest.mark.parametrize("method,symptom", [("vicreg", "complete_collapse"), ("simclr", "divergence"),
                                            ("byol", "complete_collapse")])
def test_the_random_patch_is_never_a_candidate_under_test(tmp_path, method, symptom):
    """By default the random arm draws from the applicable interventions that do not target the symptom,
    so no candidate is ever compared against itself; `random_pool=all` is the uniform draw over every one."""
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config
    from autofix.remediate import plan
    from autofix.remediate.orchestrator import Orchestrator

    def pools(*extra):
        cfg = to_run_config(compose(method, list(extra)))
        orch = Orchestrator(cfg, "t", [], tmp_path)
        config = orch.config_dict()
        cands, noops = plan.candidates(cfg, orch.registry, symptom, config)
        return {iv.id for iv in cands + noops}, {iv.id for iv in plan.random_pool(cfg, orch.registry, symptom, config)}

    targeted, untargeted = pools()
    assert targeted and untargeted and not targeted & untargeted
    _, everything = pools("remediation.random_pool=all")
    assert untargeted < everything and targeted & everything


def test_a_pinned_random_patch_is_that_intervention_and_must_be_in_the_pool(tmp_path):
    """`remediation.random_intervention` keeps the placebo fixed however many interventions are added; one
    that targets the symptom (a candidate) or does not exist is refused in one line naming the valid ones."""
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config
    from autofix.core.errors import ConfigError
    from autofix.remediate import plan
    from autofix.remediate.orchestrator import Orchestrator

    def orch(pin):
        return Orchestrator(to_run_config(compose("simclr", [f"remediation.random_intervention={pin}"])), "t", [],
                            tmp_path)

    o = orch("weight_decay_schedule")
    assert [iv.id for iv in plan.random_pool(o.cfg, o.registry, "divergence", o.config_dict())] == \
        ["weight_decay_schedule"]
    o = orch("lr_lower")  # a divergence candidate: never its own placebo
    with pytest.raises(ConfigError, match="not in the random pool for divergence.*valid: .*weight_decay_schedule"):
        plan.random_pool(o.cfg, o.registry, "divergence", o.config_dict())
    with pytest.raises(ConfigError, match="remediation.random_intervention: no_such_fix unknown; valid for simclr: .*weight_decay_schedule"):
        orch("no_such_fix")
