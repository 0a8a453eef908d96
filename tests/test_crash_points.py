"""kill -9 of the orchestrator at each point where a kill could split two state changes (AUTOFIX_CRASH_AT,
core/crashpoints.py), one after another on one run folder; each rerun picks up where the last one died.
At the end: every planned slot counted exactly once, no MLflow run left RUNNING (interrupted children
KILLED), one FINISHED child run per slot, and the child that finished before a kill kept, not rerun."""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from autofix.core.crashpoints import POINTS
from autofix.remediate.folder import study_name

pytestmark = pytest.mark.slow

# 2 candidates, 2 seeds, control and random arms: 4 arm trials and 2 screening trials in the plan, one
# promoted to seed 1 (a promotion window to kill in); a small model, since it is about bookkeeping
ARGS = ["conf=vicreg", "data=digits", "trainer.max_steps=300",
        "model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2", "fault=vicreg_invariance_only", "remediation=ci",
        "remediation.candidates=[vicreg_variance_weight,reg_variance]", "remediation.seeds=2",
        "remediation.random_intervention=weight_reparametrization", "model.width=16", "data.image_size=16",
        "trainer.progress=false", "trainer.batch_size=64", "data.n_train=768", "data.n_val=256",
        "launcher.max_parallel=2"]
SYMPTOM = "complete_collapse"
# in the order a run reaches them: "requeue" only comes in a rerun that finds trials a kill left running
CHAIN = ("plan", "result", "requeue", "promote", "verdicts")


def _run(tmp_path, crash_at: str | None):
    env = {k: v for k, v in os.environ.items() if k != "AUTOFIX_CRASH_AT"}
    if crash_at:
        env["AUTOFIX_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "autofix", "run", *ARGS, f"trainer.out_dir={tmp_path / 'run'}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def _study(tmp_path):
    import optuna

    folder = tmp_path / "run"
    return optuna.load_study(study_name=study_name(folder, SYMPTOM), storage=f"sqlite:///{folder / 'optuna.db'}")


def _no_slot_twice_alive(study) -> None:
    """Between kills: no slot has two trials that could both still count (queued or finished). A RUNNING
    one beside them is what the kill left; the rerun fails it."""
    from optuna.trial import TrialState

    live = Counter(t.user_attrs["slot"] for t in study.trials if t.state in (TrialState.WAITING, TrialState.COMPLETE))
    assert not [s for s, n in live.items() if n > 1], live


def test_a_kill_at_every_crash_point_loses_nothing_and_counts_nothing_twice(tmp_path):
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from autofix.remediate.verdict import arms_from_trials

    assert sorted(CHAIN) == sorted(POINTS)
    kept = None
    for point in CHAIN:
        r = _run(tmp_path, point)
        assert r.returncode == -9, f"{point}: not killed there (rc {r.returncode})\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        assert not (tmp_path / "run" / "done.json").exists()
        study = _study(tmp_path)
        _no_slot_twice_alive(study)
        if point == "result":   # the child whose result the study had not taken yet
            running = [t for t in study.trials if t.state == TrialState.RUNNING]
            kept = [t.user_attrs["folder"] for t in running
                    if os.path.isfile(os.path.join(t.user_attrs.get("folder", ""), "result.json"))]
            assert kept, [t.user_attrs for t in running]
    r = _run(tmp_path, None)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    study = _study(tmp_path)
    trials = study.trials
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    # the last trial of each slot is the one counted, and it finished
    last = {}
    for t in trials:
        last[t.user_attrs["slot"]] = t
    planned = {f"{role}/s{s}" for role in ("control", "random") for s in (0, 1)} | \
              {"vicreg_variance_weight:default/s0", "reg_variance:default/s0"}
    assert planned <= set(last), sorted(last)
    assert len(last) == len(planned) + 1   # and the one promoted candidate on seed 1
    assert all(t.state == TrialState.COMPLETE for t in last.values()), {s: t.state for s, t in last.items()}
    control, random, arms = arms_from_trials(trials)
    assert sorted(control.knn) == sorted(random.knn) == [0, 1]
    assert sum(len(a.knn) for a in arms.values()) == 3 and not any(a.failed for a in arms.values())
    # the child that finished before the "result" kill was read back, not trained again
    assert any(t.user_attrs.get("folder") == kept[0] for t in last.values())
    verdicts = json.loads((tmp_path / "run" / "results" / SYMPTOM / "verdicts.json").read_text())
    assert {v["intervention"] for v in verdicts} == {"vicreg_variance_weight", "reg_variance"}

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("autofix")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("autofix.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = Counter(r.data.tags["autofix.slot"] for r in runs
                       if r.data.tags.get("autofix.role") != "parent" and r.info.status == "FINISHED")
    assert set(finished) == set(last) and set(finished.values()) == {1}, finished
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
