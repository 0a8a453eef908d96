"""One child run: compose its config, fork from the parent's checkpoint, train its budget, and leave
progress.jsonl (per monitor check) and result.json in its folder. Run as a subprocess
(`python -m autofix.remediate.child spec.json`) or through submitit (`run_child`)."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ..config.compose import compose, searchpath
from ..config.convert import to_run_config
from ..core import lifeline
from ..run.assemble import assemble
from ..run.trainer import Hook
from .spec import ChildSpec, merge_overrides


class ProgressHook:
    """After each monitor check, append the symptom's state and the latest kNN to progress.jsonl, which the
    orchestrator reads for the pruner and the plots."""

    def __init__(self, monitor, symptom: str, path: Path, metric: str | None):
        self.monitor, self.symptom, self.path, self.metric = monitor, symptom, path, metric

    def on_start(self, trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def after_step(self, trainer, out) -> None:
        if trainer.step % self.monitor.cfg.every == 0:
            self.write(trainer)

    def on_end(self, trainer) -> None:
        if trainer.step % self.monitor.cfg.every:
            self.write(trainer)

    def write(self, trainer) -> None:
        holds, severity = self.monitor.state(self.symptom)
        m = self.monitor.last_metrics
        row = {"step": trainer.step, "holds": holds, "severity": severity,
               "knn": m.get("health/knn"), "metric": m.get(self.metric) if self.metric else None,
               "loss": m.get("loss/rel_improvement")}
        with self.path.open("a") as f:
            f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in row.items()}) + "\n")


class Preemption(Hook):
    """A trainer hook for children on a cluster. SLURM says "stop" with a signal: SIGTERM when it preempts,
    requeues (scontrol requeue) or cancels a job, SIGUSR2 (submitit's choice) shortly before the time limit.
    The handler only takes note; at the next step boundary the hook writes a checkpoint, so the saved state
    is a whole step, never a half-applied optimizer update. Then, for SIGUSR2, submitit's own handler runs:
    it calls ChildTask.checkpoint and requeues the job; for SIGTERM SLURM has already decided (requeue or
    cancel) and the child just exits. A requeued child starts again from this checkpoint."""

    def __init__(self, folder: Path):
        self.folder, self.signum = folder, None
        self.previous = {}
        for sig in (signal.SIGTERM, _usr_signal()):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.signum = signum

    def after_step(self, trainer, out) -> None:
        if self.signum is None:
            return
        path = trainer.save()
        name = signal.Signals(self.signum).name
        with (self.folder / "preemptions.jsonl").open("a") as f:
            f.write(json.dumps({"step": trainer.step, "signal": name, "checkpoint": str(path),
                                "job_id": os.environ.get("SLURM_JOB_ID"),
                                "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                                "time": time.time()}) + "\n")
        print(f"autofix child: {name} at step {trainer.step}; checkpoint {path}", flush=True)
        handler = self.previous.get(self.signum)
        if self.signum != signal.SIGTERM and callable(handler):
            handler(self.signum, None)  # submitit: checkpoint(), scontrol requeue, exit
        raise SystemExit(f"stopped by {name} at step {trainer.step}")  # no result: the job ends unfinished


def _usr_signal():
    # submitit's preemption signal; the same environment variable chooses it there
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class RunRecord(Hook):
    """Writes run.json as soon as the child's MLflow run exists, so that the orchestrator can attach
    logs to it even when the child fails later."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_start(self, trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "run.json").write_text(json.dumps({"run_id": trainer.tracker.run_id,
                                                          "tracking_uri": trainer.tracker.uri}))


def _watch_parent() -> None:
    """Local launchers set AUTOFIX_WATCH_PARENT to the orchestrator's identity (pid and start time): once it
    is gone (even by kill -9, even while a zombie nobody reaped), the child ends too, instead of running on
    as an orphan the resumed study would not know about."""
    ident = os.environ.get("AUTOFIX_WATCH_PARENT", "")
    if ident:
        lifeline.watch(ident, lambda: os._exit(3))


def run_child(spec_path: str) -> dict:
    spec = ChildSpec.read(spec_path)
    _watch_parent()
    if spec.conf_dir:
        os.environ["AUTOFIX_CONF_DIR"] = spec.conf_dir
    started = time.perf_counter()
    folder = Path(spec.out_dir)
    extra = []
    if any((folder / "checkpoints").glob("step_*.pt")):
        extra.append(f"trainer.resume={folder}")  # requeued: go on from its own checkpoint, not the fork
    cfg = to_run_config(compose(spec.experiment, searchpath(spec.search_dirs) + merge_overrides(spec.overrides, extra)))
    cfg.tracking.parent_run_id = spec.parent_run_id
    cfg.tracking.tags = {**cfg.tracking.tags, **spec.tags, **_cluster_tags()}
    run = assemble(cfg, folder)
    trainer, monitor = run.trainer, run.monitor
    if monitor:
        trainer.hooks.append(ProgressHook(monitor, spec.symptom, folder / "progress.jsonl",
                                          _symptom_metric(cfg, spec.symptom)))
    trainer.hooks.append(RunRecord(folder))
    if os.environ.get("SLURM_JOB_ID"):
        trainer.hooks.append(Preemption(folder))
    summary = trainer.fit()
    holds, severity = monitor.state(spec.symptom) if monitor else (False, 0.0)
    judged = bool(monitor) and monitor.judged(spec.symptom)
    knn = summary["knn"]
    diverged = has_diverged(trainer.model, summary)
    result = {"trial": spec.trial, "role": spec.role, "seed": spec.seed, "intervention": spec.intervention,
              "knn": knn if knn is not None and math.isfinite(knn) and not diverged else None, "diverged": diverged,
              "resolved": judged and not holds, "judged": judged, "severity": severity, "steps": summary["steps"] - trainer.fork_info.get("step", 0),
              "seconds": round(time.perf_counter() - started, 2), "run_id": summary["run_id"],
              "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),  # seconds: the last attempt's
              "fork": trainer.fork_info}
    if summary["run_id"]:  # what `autofix report` needs to judge this child from MLflow alone
        from mlflow.tracking import MlflowClient

        client = MlflowClient(trainer.tracker.uri)
        for k in ("resolved", "steps", "seconds"):
            client.set_tag(summary["run_id"], f"autofix.{k}", str(result[k]).lower())
        client.set_tag(summary["run_id"], "autofix.outcome", "diverged" if diverged else "trained")
    # last, and whole or not at all: a result.json means the child's run is ended and tagged, so an
    # orchestrator that resumes after a kill keeps it as it is
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(folder / "result.json")
    return result


def has_diverged(model, summary: dict) -> bool:
    """Weights or the last loss that are not finite: the run diverged. Its kNN (non-finite features count
    as wrong answers, so near 0) measures nothing, and it is recorded as its own outcome, not as a zero."""
    loss = summary.get("loss_terms", {}).get("total")
    if loss is not None and not math.isfinite(loss):
        return True
    return any(not bool(p.detach().isfinite().all()) for p in model.parameters())


def _cluster_tags() -> dict[str, str]:
    """Which SLURM job ran (or last ran) this child: the evidence that it ran on the cluster."""
    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    return {"autofix.slurm.job_id": env["SLURM_JOB_ID"], "autofix.slurm.node": env.get("SLURMD_NODENAME", ""),
            "autofix.slurm.restarts": env.get("SLURM_RESTART_COUNT", "0")}


class ChildTask:
    """What submitit runs. Being checkpointable (a `checkpoint` method) lets submitit requeue the job at
    its time limit; the child then resumes from the checkpoint that Preemption wrote."""

    def __init__(self, spec_path: str):
        self.spec_path = spec_path

    def __call__(self) -> dict:
        return run_child(self.spec_path)

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(ChildTask(self.spec_path))


def _symptom_metric(cfg, symptom: str) -> str | None:
    """The first rule's metric of the first detector of `symptom`: what the plots show."""
    for det in cfg.monitor.detectors.values():
        if det.symptom == symptom and det.rules:
            return det.rules[0].metric
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = argv[0]
    try:
        run_child(spec_path)
    except BaseException as e:  # the reason goes where the orchestrator looks, then the process fails
        folder = Path(spec_path).parent
        reason = f"{type(e).__name__}: {e}".strip()
        (folder / "error.json").write_text(json.dumps({"reason": reason.splitlines()[0][:500],
                                                       "traceback": traceback.format_exc()}))
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
