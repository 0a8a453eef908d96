"""Children on a live single-node SLURM cluster (scripts/slurm_local.sh, started by .ci/run; started here if
sbatch exists but no cluster answers). Real sbatch, squeue, scontrol and scancel; no mock."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sbatch") is None,
                                 reason="sbatch not found: SLURM is not installed (scripts/slurm_local.sh up installs "
                                        "it on Debian as root)")]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"


def _answers() -> bool:
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF for a cluster that answers: the one .ci/run started, or one started (and stopped) here."""
    default = os.environ.get("AUTOFIX_SLURM_DIR", "/tmp/autofix-slurm") + "/slurm.conf"
    if "SLURM_CONF" not in os.environ and Path(default).is_file():
        os.environ["SLURM_CONF"] = default
    started = False
    if not _answers():
        subprocess.run(["bash", str(SCRIPT), "up"], check=True, timeout=300)
        os.environ["SLURM_CONF"] = default
        started = True
    assert _answers(), "the SLURM cluster does not answer sinfo"
    yield os.environ["SLURM_CONF"]
    if started:
        subprocess.run(["bash", str(SCRIPT), "down"], timeout=120)


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "--me", "-h", "--states=all", "-o", "%i|%T"], capture_output=True, text=True)
    return dict(line.split("|") for line in out.stdout.split())


def _mlflow(tmp_path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_remediation_runs_its_children_as_slurm_jobs(tmp_path, cluster):
    """The collapse scenario of test_remediation with launcher=slurm, on a narrow model with two seeds and
    without the random arm (test_remediation judges the verdicts; this test is about the engine, and keeps
    CI short): each child is a SLURM job (seen in squeue while it runs, its id a tag on its MLflow run, its
    logs attached); one child cancelled with scancel becomes a failed trial with its reason and the study
    goes on to replicate the other candidate, which ends the collapse."""
    import optuna

    cmd = [sys.executable, "-m", "autofix", "run", "conf=vicreg", "data=digits", "trainer.max_steps=300",
           "model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2",
           "fault=vicreg_invariance_only",
           "remediation.candidates=[vicreg_variance_weight,reg_variance]", "remediation=ci", "remediation.random_arm=false", "remediation.seeds=2", "model.width=16",
           "launcher=slurm",
           "launcher.max_parallel=2", "launcher.poll_s=0.5", "launcher.mem_gb=2",
           "launcher.threads_per_child=2",  # ignored on SLURM: children take SLURM_CPUS_PER_TASK (1)
           "trainer.progress=false",
           "trainer.batch_size=64", "data.n_train=768", "data.n_val=256", f"trainer.out_dir={tmp_path / 'run'}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    log = open(tmp_path / "orchestrator.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    seen_running: set[str] = set()
    cancelled = None
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        seen_running |= {j for j, s in _squeue().items() if s == "RUNNING"}
        if cancelled is None:  # cancel the screening run of the weaker candidate as soon as it is submitted
            for spec in (tmp_path / "run" / "children").glob("*/trial-*-treatment-s0/spec.json"):
                job = spec.parent / "job.json"
                if json.loads(spec.read_text())["intervention"] == "reg_variance" and job.is_file():
                    cancelled = json.loads(job.read_text())["job_id"]
                    subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.5)
    out = (tmp_path / "orchestrator.log").read_text()
    assert proc.returncode == 0, out[-4000:]
    assert cancelled is not None, out[-3000:]
    assert "sacct" not in out  # states come from squeue: no accounting daemon needed, no warning per poll

    rows = {r["intervention"]: r for r in
            json.loads((tmp_path / "run" / "results" / "complete_collapse" / "verdicts.json").read_text())}
    fix = rows["vicreg_variance_weight"]
    assert fix["seeds"] == 2 and fix["resolved_rate"] == 1.0, out[-3000:]
    # the storage on a cluster is a journal file (safe on shared file systems), not SQLite
    journal = tmp_path / "run" / "optuna.journal"
    assert journal.is_file() and not (tmp_path / "run" / "optuna.db").exists()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from autofix.remediate.folder import study_name
    study = optuna.load_study(study_name=study_name(tmp_path / "run", "complete_collapse"), storage=JournalStorage(JournalFileBackend(str(journal))))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["job_id"] for t in failed] == [cancelled]
    assert f"SLURM job {cancelled} cancelled" in failed[0].user_attrs["fail_reason"]
    assert rows["reg_variance"]["failed"] == 1 and rows["reg_variance"]["verdict"] == "screened out"

    client = _mlflow(tmp_path)
    exp = client.get_experiment_by_name("autofix")
    kids = client.search_runs([exp.experiment_id], "tags.`autofix.role` != 'parent'")
    finished = [k for k in kids if k.info.status == "FINISHED"]
    assert len(finished) == 4  # 2 control, 2 treatment (the cancelled one never finished)
    job_ids = {k.data.tags["autofix.slurm.job_id"] for k in finished}
    assert len(job_ids) == 4 and job_ids <= seen_running  # every result came from a job squeue showed running
    script = next((tmp_path / "run" / "submitit").glob("*/*_submission.sh")).read_text()
    for line in ("--job-name=autofix", "--mem=2GB", "--cpus-per-task=1", "--signal=USR2@90", "--time=60"):
        assert f"#SBATCH {line}\n" in script  # the launcher's settings reached sbatch
    assert {k.data.params["trainer.threads"] for k in finished} == {"1"}
    for k in finished:
        arts = {Path(a.path).name for a in client.list_artifacts(k.info.run_id, "logs")}
        jid = k.data.tags["autofix.slurm.job_id"]
        assert {f"{jid}_0_log.out", f"{jid}_0_log.err", f"{jid}_submission.sh", "spec.json"} <= arts


def _child_spec(tmp_path, name, trial):
    from autofix.remediate.spec import ChildSpec

    folder = tmp_path / name
    return ChildSpec(trial, "control", 0, "complete_collapse", "vicreg",
                     # a narrow model: the test is about exact resumption, not about what the child learns
                     ["data=digits", "model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2",
                      "trainer.max_steps=160", "data.n_train=512", "data.n_val=256", "trainer.batch_size=64",
                      "model.width=16",
                      "probe.linear=false", "probe.at_start=false", "remediation.enabled=false",
                      "trainer.progress=false", "monitor.every=20", "monitor.knn_every=40", "trainer.threads=1",
                      f"trainer.out_dir={folder}", "tracking.enabled=true",
                      f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"], str(folder))


def _rows(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def test_preempted_child_resumes_from_its_checkpoint(tmp_path, cluster):
    """A child requeued mid-run (scontrol requeue: SIGTERM), then signalled as near its time limit (SIGUSR2:
    submitit's checkpointing hook requeues it), ends with the same result as the same child run without
    interruption beside it: one result, one MLflow run, and the launcher never reported it finished early."""
    from mlflow.tracking import MlflowClient

    from autofix.config.remediation import LauncherConfig
    from autofix.remediate.launchers import DONE, RUNNING, build_launcher

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # create the store once
    slurm = build_launcher(LauncherConfig(name="slurm", poll_s=0.5, mem_gb=2, job_prefix="autofix-preempt",
                                          sbatch_args={"comment": "preempted-twice"}), tmp_path)
    local = build_launcher(LauncherConfig(name="local"), tmp_path)
    job = slurm.submit(_child_spec(tmp_path, "preempted", 0))
    plain = local.submit(_child_spec(tmp_path, "plain", 1))
    progress = tmp_path / "preempted" / "progress.jsonl"
    sent: list[str] = []
    deadline = time.time() + 600
    while slurm.poll(job) == RUNNING and time.time() < deadline:
        state = slurm.state(job)[0]
        if state == "RUNNING" and not sent and _rows(progress) >= 3:
            subprocess.run(["scontrol", "requeue", job.job_id], check=True)
            sent.append("SIGTERM")
        elif state == "RUNNING" and len(sent) == 1 and _rows(progress) >= 6:
            subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
            sent.append("SIGUSR2")
        elif state == "PENDING" and sent:
            # SLURM holds a requeued job back for two minutes; the test cannot wait that long
            subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], capture_output=True)
        time.sleep(0.3)
    assert slurm.poll(job) == DONE, slurm.reason(job)
    while local.poll(plain) == RUNNING:
        time.sleep(0.3)

    stops = [json.loads(l) for l in (tmp_path / "preempted" / "preemptions.jsonl").read_text().splitlines()]
    assert [s["signal"] for s in stops] == sent == ["SIGTERM", "SIGUSR2"]
    assert [s["restart"] for s in stops] == [0, 1] and 0 < stops[0]["step"] < stops[1]["step"] < 160
    got = json.loads((tmp_path / "preempted" / "result.json").read_text())
    ref = json.loads((tmp_path / "plain" / "result.json").read_text())
    assert got["restarts"] == 2 and got["steps"] == ref["steps"] == 160
    # resume is exact (weights, optimizer, data order, RNG and the monitor's state travel in the checkpoint)
    assert got["knn"] == ref["knn"] and got["resolved"] == ref["resolved"]

    def by_step(path):
        return {json.loads(l)["step"]: l for l in path.read_text().splitlines()}
    assert by_step(progress) == by_step(tmp_path / "plain" / "progress.jsonl")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`autofix.slurm.job_id` = '{job.job_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == got["run_id"]
    assert runs[0].data.tags["autofix.slurm.restarts"] == "2"
    script = job.handle.paths.submission_file.read_text()
    assert "#SBATCH --job-name=autofix-preempt\n" in script and "#SBATCH --comment=preempted-twice\n" in script


def test_multirun_sweep_runs_each_job_on_slurm(tmp_path, cluster):
    """`--multirun hydra/launcher=submitit_slurm`: Hydra's submitit plugin sends each run of a sweep to the
    cluster; their MLflow runs land in one SQLite store created by two jobs at once (first use is locked)."""
    cmd = [sys.executable, "-m", "autofix", "run", "conf=vicreg", "--multirun", "hydra/launcher=submitit_slurm",
           "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
           "trainer.max_steps=20", "data.n_train=256", "data.n_val=128", "trainer.seed=0,1", "remediation=off",
           "trainer.progress=false", "probe.linear=false", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    said = r.stdout + r.stderr  # submitit's per-poll sacct warning is replaced by one notice
    assert "sacct is not available" in said and "Bypassing sacct error" not in said
    logs = list((tmp_path / "multirun").glob("vicreg/*/.submitit/*/*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in p.read_text() for p in logs)
    client = _mlflow(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("autofix").experiment_id])
    assert sorted(r.data.params["trainer.seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
