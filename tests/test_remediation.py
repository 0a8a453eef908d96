"""The remediation loop end to end, as a user runs it (`python -m autofix run ...` in a subprocess), with
the CI budget profile (remediation=ci): real children, a real Optuna SQLite study, a real MLflow store."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from autofix.remediate.folder import study_name

pytestmark = pytest.mark.slow


# Digits are 8x8 images: at 16 pixels a side the convnet costs about a third of its default 32. The VICReg
# collapse fix still comes out helped there; the BYOL and divergence fixes' gains over the control
# shrink into their intervals (measured 2026-11-28: +0.021 [-0.006, +0.047] and +0.134 [-0.015, +0.283]),
# so those two tests keep the default size.
SMALL_IMAGES = "data.image_size=16"
# The scenarios below were set up on digits at 300 steps, before simclr and vicreg moved to scenes at 500: they
# test the loop's decisions at CI's cost, and keep that testbed (the verdicts on scenes are issue 27's bench).
DIGITS = ("data=digits", "trainer.max_steps=300")
# and VICReg's old 512-512-128 head: the 1024x3 expander costs more than these width-16 encoders (CI's slow
# suite went from 9 to 12 minutes with it)
OLD_HEAD = ("model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2")
# The random arm pinned (its values still drawn from the seed): left to the draw it changed whenever an
# intervention was added, and twice a new draw took a test from passing to failing.
PLACEBO = "remediation.random_intervention=weight_reparametrization"


def _run(tmp_path, *overrides, timeout=900, wait=True):
    cmd = [sys.executable, "-m", "autofix", "run", *overrides, "remediation=ci", "trainer.progress=false",
           "trainer.batch_size=64", "data.n_train=768", "data.n_val=256",
           f"trainer.out_dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
           "launcher.max_parallel=2"]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=open(tmp_path / "orchestrator.log", "a"),
                                stderr=subprocess.STDOUT)
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _verdicts(tmp_path, symptom):
    rows = json.loads((tmp_path / "run" / "results" / symptom / "verdicts.json").read_text())
    return {r["intervention"]: r for r in rows}


def _mlflow(tmp_path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_vicreg_collapse_is_repaired_by_restoring_the_variance_term(tmp_path):
    r = _run(tmp_path, "conf=vicreg", *DIGITS, *OLD_HEAD, "fault=vicreg_invariance_only",
             # 4 seeds: a random patch that scatters (a narrower backbone re-initialised at the fork, once
             # drawn) left the fix's +0.095 over it at [-0.061, +0.251] with 3
             "remediation.candidates=[vicreg_variance_weight,reg_variance]", "remediation.seeds=4", SMALL_IMAGES,
             PLACEBO)
    v = _verdicts(tmp_path, "complete_collapse")
    fix = v["vicreg_variance_weight"]
    assert fix["resolved_rate"] >= 0.5 and fix["vs_control"]["low"] > 0, r.stdout[-3000:]
    random_is_a_repair = _random_arm_repairs(tmp_path, "complete_collapse")
    # helped, unless the random patch is itself a repair: it never targets the symptom, but a patch
    # aimed elsewhere can still end a collapse; then nothing may count as helped, which is its job
    assert fix["verdict"] == "helped" or random_is_a_repair, r.stdout[-3000:]
    if not random_is_a_repair:
        assert fix["vs_random"]["low"] > 0
    # MLflow: a parent with nested children, tagged by role, and the verdict on the parent
    client = _mlflow(tmp_path)
    exp = client.get_experiment_by_name("autofix")
    parent = client.search_runs([exp.experiment_id], "tags.`autofix.role` = 'parent'")[0]
    assert parent.data.tags["autofix.verdict.complete_collapse.vicreg_variance_weight"] == fix["verdict"]
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    roles = sorted(k.data.tags["autofix.role"] for k in kids)
    # 4 seeds of each arm; both candidates screened on seed 0, the better promoted to the other three seeds
    assert roles.count("control") == 4 and roles.count("random") == 4 and roles.count("treatment") == 5
    assert v["reg_variance"]["verdict"] == "screened out"
    fork = int(kids[0].data.tags["autofix.fork_step"])
    steps = [m.step for m in client.get_metric_history(kids[0].info.run_id, "loss/total")]
    assert min(steps) > fork  # child metrics sit at the parent's step numbers
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "remediation/complete_collapse")}
    assert {"remediation/complete_collapse/verdicts.md", "remediation/complete_collapse/curves.png"} <= arts
    # the report reads the same verdicts back from MLflow alone
    rep = subprocess.run([sys.executable, "-m", "autofix", "report", "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                          "--html", str(tmp_path / "report.html")], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0 and "vicreg_variance_weight" in rep.stdout and fix["verdict"] in rep.stdout
    assert "<table" in (tmp_path / "report.html").read_text()
    ev = subprocess.run([sys.executable, "-m", "autofix", "report", "--evidence", "--out", str(tmp_path / "ev.csv"),
                         "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0 and "vicreg_variance_weight" in (tmp_path / "ev.csv").read_text()


def _random_arm_repairs(tmp_path, symptom) -> bool:
    """The random patch resolved the symptom on most seeds and beat the control's kNN."""
    import optuna

    from autofix.remediate.verdict import arms_from_trials
    study = optuna.load_study(study_name=study_name(tmp_path / "run", symptom), storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    control, random, _ = arms_from_trials(study.get_trials())
    return random.resolved_rate >= 0.5 and sum(random.knn.values()) > sum(control.knn.values())


def _check_machinery(tmp_path, symptom, candidates, seeds):
    """What the loop guarantees whatever the numbers come out as (the CPU's kernels and the thread count
    move them): the plan ran (control and random on every seed, every candidate screened, the promoted on
    every seed), each arm's trial ended with a value or a reason, and each verdict is the one `decide`
    gives on the study's own trials, with an interval around its mean."""
    import math

    import optuna
    from optuna.trial import TrialState

    from autofix.remediate import verdict as V

    study = optuna.load_study(study_name=study_name(tmp_path / "run", symptom), storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    trials = study.get_trials()
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED), t
        assert t.state != TrialState.FAIL or t.user_attrs.get("fail_reason"), t
    for role in ("control", "random"):
        assert sorted(t.user_attrs["seed"] for t in trials if t.user_attrs["role"] == role) == list(range(seeds))
    promoted = study.user_attrs["promoted"]
    assert promoted and set(promoted) <= set(candidates)
    control, random, arms = V.arms_from_trials(trials)
    assert set(arms) == set(candidates)
    rows = _verdicts(tmp_path, symptom)
    assert set(rows) == set(candidates)
    for name, arm in arms.items():
        expected = V.decide(name, arm, control, random, 0.95, screened=name not in promoted)
        row = rows[name]
        assert row["verdict"] == expected.verdict, (name, row)
        if name in promoted:
            assert row["seeds"] == seeds
            ci = row["vs_control"]
            assert math.isfinite(ci["mean"]) and ci["low"] <= ci["mean"] <= ci["high"], row
    return rows


def test_byol_collapse_is_remediated_with_a_verdict_for_weaker_views(tmp_path):
    """BYOL with its predictor removed (the momentum target kept) collapses; an augmentation curriculum from
    the fork (weaker views) is tried against the control and the random patch. Whether it helps is
    measured (docs/remediation.md), not asserted: on a fresh machine its gain over the random patch came
    out +0.023 [-0.006, +0.053], so a margin tuned on one machine is no test."""
    _run(tmp_path, "conf=byol", "fault=byol_predictor_off", "remediation.candidates=[augment_curriculum]",
         "remediation.seeds=2", PLACEBO)
    _check_machinery(tmp_path, "complete_collapse", ["augment_curriculum"], seeds=2)


def test_divergence_is_remediated_with_verdicts_for_a_lower_lr_clipping_and_warmup(tmp_path):
    """A SimCLR run at a high SGD lr diverges; three repairs are screened on seed 0, the best promoted. Which
    one helps is measured, not asserted (on a fresh machine the best read +0.23 against the control with a
    lower bound of -0.019)."""
    fixes = ["lr_lower", "grad_clip", "lr_warmup"]
    _run(tmp_path, "conf=simclr", *DIGITS, "fault=sgd_high_lr", f"remediation.candidates=[{','.join(fixes)}]",
         "remediation.seeds=2", "remediation.random_intervention=weight_decay_schedule")
    _check_machinery(tmp_path, "divergence", fixes, seeds=2)


def test_healthy_run_launches_no_child(tmp_path):
    _run(tmp_path, "conf=vicreg", "data=digits", "trainer.max_steps=120", *OLD_HEAD, SMALL_IMAGES)
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert done["symptoms"] == [] and done["remediated"] == {}
    assert not (tmp_path / "run" / "children").exists()


def test_killed_orchestrator_resumes_its_study(tmp_path):
    import optuna
    from optuna.trial import TrialState

    args = ("conf=vicreg", *DIGITS, *OLD_HEAD, "fault=vicreg_invariance_only", "remediation.candidates=[vicreg_variance_weight]",
            "remediation.random_arm=false", "remediation.seeds=2",
            "launcher.max_parallel=1",  # 4 children: enough to kill mid-study
            "model.width=16", SMALL_IMAGES)  # the test is about resuming, not the verdict: a small model will do
    proc = _run(tmp_path, *args, wait=False)
    db = tmp_path / "run" / "optuna.db"
    deadline = time.time() + 600
    finished = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(2)
        if db.exists():
            try:
                study = optuna.load_study(study_name=study_name(db.parent, "complete_collapse"), storage=f"sqlite:///{db}")
                finished = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
            except Exception:
                continue
            if len(finished) >= 2:
                break
    assert len(finished) >= 2, (tmp_path / "orchestrator.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the study holds a RUNNING trial
    proc.wait()
    time.sleep(3)  # the running child notices its orchestrator is gone and exits
    running = [t.number for t in optuna.load_study(study_name=study_name(db.parent, "complete_collapse"), storage=f"sqlite:///{db}").trials
               if t.state == TrialState.RUNNING]
    _run(tmp_path, *args)
    study = optuna.load_study(study_name=study_name(db.parent, "complete_collapse"), storage=f"sqlite:///{db}")
    by_number = {t.number: t for t in study.trials}
    for n in finished:  # finished trials were not rerun
        assert by_number[n].state == TrialState.COMPLETE
    for n in running:  # the interrupted ones failed with a reason, and were queued again
        assert "interrupted" in by_number[n].user_attrs["fail_reason"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    keys = sorted((t.user_attrs["role"], t.params.get("intervention"), t.user_attrs["seed"]) for t in done)
    assert len(keys) == len(set(keys)) == 4  # control and treatment x 2 seeds, each exactly once
    client = _mlflow(tmp_path)
    exp = client.get_experiment_by_name("autofix")
    assert len(client.search_runs([exp.experiment_id], "tags.`autofix.role` = 'parent'")) == 1


def test_crashed_child_is_a_failed_trial_with_its_reason(tmp_path):
    from autofix.config.remediation import LauncherConfig
    from autofix.remediate.launchers import FAILED, LocalLauncher
    from autofix.remediate.spec import ChildSpec

    launcher = LocalLauncher(LauncherConfig(), tmp_path)
    spec = ChildSpec(0, "treatment", 0, "complete_collapse", "vicreg", ["trainer.fork=/nonexistent/step.pt",
                     "tracking.enabled=false", "remediation.enabled=false"], str(tmp_path / "child"))
    job = launcher.submit(spec)
    while launcher.poll(job) == "running":
        time.sleep(0.2)
    assert launcher.poll(job) == FAILED
    assert "no checkpoint at /nonexistent/step.pt" in launcher.reason(job)
    killed = launcher.submit(ChildSpec(1, "control", 0, "complete_collapse", "vicreg",
                                       ["tracking.enabled=false", "remediation.enabled=false"], str(tmp_path / "k")))
    time.sleep(1)
    os.kill(killed.handle.pid, signal.SIGKILL)
    killed.handle.wait()
    assert launcher.poll(killed) == FAILED and "killed by signal 9" in launcher.reason(killed)


def test_a_diverged_child_is_recorded_as_diverged_with_no_knn(tmp_path):
    """A child whose weights go non-finite is its own outcome: result.json says diverged and carries no kNN
    (its probe would read near 0: non-finite features count as wrong answers)."""
    from autofix.config.remediation import LauncherConfig
    from autofix.remediate.launchers import DONE, LocalLauncher
    from autofix.remediate.spec import ChildSpec

    launcher = LocalLauncher(LauncherConfig(), tmp_path)
    spec = ChildSpec(0, "control", 0, "divergence", "simclr",
                     ["fault=sgd_huge_lr", "optimizer.lr=1e8", "trainer.max_steps=30", "data.n_train=128", "data.n_val=64", "trainer.batch_size=32",
                      "model.width=8", "probe.linear=false", "tracking.enabled=false", "remediation.enabled=false",
                      "monitor.every=10", "monitor.knn_every=10"], str(tmp_path / "c"))
    job = launcher.submit(spec)
    deadline = time.time() + 300
    while launcher.poll(job) == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert launcher.poll(job) == DONE, launcher.reason(job)
    result = json.loads((tmp_path / "c" / "result.json").read_text())
    assert result["diverged"] is True and result["knn"] is None and result["resolved"] is False


def test_a_child_composes_with_the_users_config_dir(tmp_path):
    """`--config-dir DIR model=mine`: the parent found DIR/model/mine.yaml through Hydra's search path, and
    its children must too (they compose in their own process, from the spec)."""
    from autofix.config.remediation import LauncherConfig
    from autofix.remediate.launchers import DONE, LocalLauncher
    from autofix.remediate.spec import ChildSpec

    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "mine.yaml").write_text("defaults:\n  - tiny_convnet\n  - _self_\nwidth: 4\n")
    launcher = LocalLauncher(LauncherConfig(), tmp_path)
    spec = ChildSpec(0, "control", 0, "complete_collapse", "vicreg",
                     ["model=mine", "trainer.max_steps=2", "data.n_train=64", "data.n_val=32", "trainer.batch_size=16",
                      "probe.linear=false", "tracking.enabled=false", "remediation.enabled=false", "monitor.enabled=false"],
                     str(tmp_path / "c"), search_dirs=[str(tmp_path / "mine")])
    job = launcher.submit(spec)
    deadline = time.time() + 300
    while launcher.poll(job) == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert launcher.poll(job) == DONE, launcher.reason(job)   # without the search path: "unknown model 'mine'"
    assert json.loads((tmp_path / "c" / "result.json").read_text())["steps"] == 2


@pytest.mark.parametrize("name", ["local", "submitit_local"])
def test_launchers_run_a_child_to_its_result(tmp_path, name):
    from autofix.config.remediation import LauncherConfig
    from autofix.remediate.launchers import DONE, build_launcher
    from autofix.remediate.spec import ChildSpec

    launcher = build_launcher(LauncherConfig(name=name), tmp_path)
    spec = ChildSpec(0, "control", 0, "complete_collapse", "vicreg",
                     ["trainer.max_steps=5", "data.n_train=128", "data.n_val=64", "trainer.batch_size=32",
                      "model.width=8", "probe.linear=false", "tracking.enabled=false", "remediation.enabled=false",
                      "monitor.every=5", "monitor.knn_every=5", f"trainer.out_dir={tmp_path / 'c'}"],
                     str(tmp_path / "c"))
    job = launcher.submit(spec)
    deadline = time.time() + 300
    while launcher.poll(job) == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert launcher.poll(job) == DONE, launcher.reason(job)
    result = json.loads((tmp_path / "c" / "result.json").read_text())
    assert result["steps"] == 5 and 0 <= result["knn"] <= 1
    assert (tmp_path / "c" / "progress.jsonl").read_text().count("\n") == 1
