"""One child run: compose its config, fork from the parent's checkpoint, train its budget, and leave
progress.jsonl (per monitor check) and result.json in its folder. Run as a subprocess
(`python -m autofix.remediate.child spec.json`) or through submitit (`run_child`)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path


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
               "knn": m.get("probe/knn"), "metric": m.get(self.metric) if self.metric else None,
               "loss": m.get("loss/rel_improvement")}
        with self.path.open("a") as f:
            f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in row.items()}) + "\n")


def _watch_parent() -> None:
    """Local launchers set AUTOFIX_WATCH_PARENT to the orchestrator's pid: when it dies (even by kill -9)
    the child ends too, instead of running on as an orphan the resumed study would not know about."""
    pid = int(os.environ.get("AUTOFIX_WATCH_PARENT", "0") or 0)
    if not pid:
        return
    import threading

    def watch():
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(3)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True).start()


def run_child(spec_path: str) -> dict:
    from ..config import to_run_config
    from ..hydra_app import compose
    from ..monitor.health import build_monitor
    from ..trainer import Trainer
    from .spec import ChildSpec

    spec = ChildSpec.read(spec_path)
    _watch_parent()
    if spec.conf_dir:
        os.environ["AUTOFIX_CONF_DIR"] = spec.conf_dir
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
    if threads:  # without cgroups a SLURM job sees every core: use what it was given
        import torch
        torch.set_num_threads(threads)
    started = time.perf_counter()
    cfg = to_run_config(compose(spec.experiment, spec.overrides))
    cfg.tracking.parent_run_id = spec.parent_run_id
    cfg.tracking.tags = {**cfg.tracking.tags, **spec.tags}
    hooks = build_monitor(cfg.monitor)
    folder = Path(spec.out_dir)
    metric = _symptom_metric(cfg, spec.symptom)
    if hooks:
        hooks.append(ProgressHook(hooks[0], spec.symptom, folder / "progress.jsonl", metric))
    trainer = Trainer(cfg, folder, hooks=hooks)
    summary = trainer.fit()
    holds, severity = hooks[0].state(spec.symptom) if hooks else (False, 0.0)
    knn = summary["knn"]
    result = {"trial": spec.trial, "role": spec.role, "seed": spec.seed, "intervention": spec.intervention,
              "knn": knn if knn is not None and math.isfinite(knn) else None,
              "resolved": not holds, "severity": severity, "steps": summary["steps"] - trainer.fork_info.get("step", 0),
              "seconds": round(time.perf_counter() - started, 2), "run_id": summary["run_id"],
              "fork": trainer.fork_info}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    if summary["run_id"]:  # what `autofix report` needs to judge this child from MLflow alone
        from mlflow.tracking import MlflowClient

        client = MlflowClient(trainer.tracker.uri)
        for k in ("resolved", "steps", "seconds"):
            client.set_tag(summary["run_id"], f"autofix.{k}", str(result[k]).lower())
    return result


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
