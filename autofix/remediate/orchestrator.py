"""The remediation of one symptom: children scheduled by an Optuna study, submitted to a launcher,
polled, and told back to the study; then the verdicts.

fork point (a pinned checkpoint of the parent) -> the plan (control and random arms, every candidate at
its defaults on seed 0) -> promotion of the best to the other seeds -> `extra_trials` the sampler picks;
each trial is one child on one seed. The study lives in the run folder, so running the same command
again after a crash or a kill picks up where it stopped."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ..config.schema import RunConfig
from ..core import lifeline
from ..core.crashpoints import crash_point
from ..core.errors import ConfigError
from ..core.paths import conf_dir
from ..core.progress import console
from ..knowledge import interventions, links
from ..run import checkpoint
from ..run.tracking import default_uri
from . import plan
from . import verdict as V
from .folder import study_name
from .launchers import DONE, FAILED, RUNNING, Job, build_launcher
from .parent import fork_step
from .spec import ChildSpec, merge_overrides
from .study import open_study
from .verdict import RANDOM, TREATMENT, arms_from_trials

# What a trial's reason says until its child ends: the reason it keeps if the orchestrator dies first.
INTERRUPTED = "orchestrator interrupted; requeued"
# What belongs to one attempt at a trial, not to the trial a requeued copy repeats.
_PER_ATTEMPT = ("fail_reason", "job_id", "process", "launcher", "folder", "kept")


def check_fork(ckpt: Path) -> None:
    """Every child loads the fork checkpoint: a corrupt one is found here once, not by each child in turn."""
    try:
        state = checkpoint.load(ckpt)
    except (ConfigError, FileNotFoundError):
        state = None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"the fork checkpoint {ckpt} is not readable (truncated, corrupt or not ours); valid: "
                          f"remove {ckpt.parent.parent} (its parent then trains again) or the whole run folder")


class Orchestrator:
    def __init__(self, cfg: RunConfig, experiment: str, overrides: list[str], folder: Path,
                 config_text: str | None = None, search_dirs: list[str] = ()):
        self.cfg, self.experiment, self.folder, self.config_text = cfg, experiment, Path(folder), config_text
        self.search_dirs = list(search_dirs)   # the user's --config-dir folders, for the children's compose
        self.parent_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra", "remediation", "launcher"))]
        self.registry = interventions.load()
        r = cfg.remediation
        plan.check_candidates(cfg, self.registry)
        if r.knn_every % cfg.monitor.every:
            raise ConfigError(f"remediation.knn_every: {r.knn_every} is not a multiple of monitor.every "
                              f"({cfg.monitor.every})")

    def config_dict(self) -> dict:
        return OmegaConf.to_container(OmegaConf.structured(self.cfg))

    def remediate(self, parent: dict, event: dict) -> list[V.Verdict]:
        r, symptom = self.cfg.remediation, event["id"]
        fork = fork_step(self.cfg, parent, event)
        ckpt = Path(parent["checkpoints"]) / f"step_{fork:08d}.pt"
        if not ckpt.is_file():
            raise ConfigError(f"no checkpoint at the fork point (step {fork}): {ckpt}")
        check_fork(ckpt)
        config = self.config_dict()
        cands, noops = plan.candidates(self.cfg, self.registry, symptom, config)
        pool = plan.random_pool(self.cfg, self.registry, symptom, config)
        if noops:
            console.print(f"  not tried, already in the parent's config: {', '.join(iv.id for iv in noops)}")
        if not cands:
            console.print(f"[yellow]no intervention targets {symptom} for {self.cfg.method.name}; nothing to try[/]")
            return []
        study = open_study(self.cfg, self.folder, study_name(self.folder, symptom))
        if not study.user_attrs.get("planned"):
            plan.enqueue_plan(study, self.cfg, cands, noops, pool, fork, config)
        launcher = build_launcher(self.cfg.launcher, self.folder)
        self._recover(study, launcher)
        console.print(f"[bold]remediating {symptom}[/] from step {fork} ({r.fork}): {len(cands)} candidates x "
                      f"{r.seeds} seeds, control{' and random' if r.random_arm else ''} arms, "
                      f"{r.extra_trials} sampler trials; study in {self.folder}")
        choices = [iv.id for iv in cands]
        running: dict[int, tuple] = {}
        try:
            while True:
                while len(running) < launcher.capacity:
                    trial = self._next_trial(study, choices)
                    if trial is None:
                        break
                    trial.set_user_attr("fail_reason", INTERRUPTED)   # replaced when the child ends
                    if trial.user_attrs.get("kept"):   # its child finished before a kill: read, not rerun
                        trial.set_user_attr("folder", trial.user_attrs["kept"])
                        self._finish(study, trial, Job(ChildSpec.read(Path(trial.user_attrs["kept"]) / "spec.json"), None),
                                     DONE, launcher)
                        continue
                    spec = self._spec(trial, symptom, fork, ckpt, parent)
                    trial.set_user_attr("folder", str(spec.folder))
                    job = launcher.submit(spec)
                    (spec.folder / "job.json").write_text(json.dumps({"launcher": self.cfg.launcher.name,
                                                                      "job_id": job.job_id, "trial": trial.number}))
                    for k, v in (("job_id", job.job_id), ("process", job.process), ("launcher", self.cfg.launcher.name)):
                        trial.set_user_attr(k, v)
                    running[trial.number] = (trial, job, -1)
                if not running:
                    if study.user_attrs.get("promoted") is None:
                        plan.promote(study, self.cfg, self.registry)
                        continue
                    break
                time.sleep(self.cfg.launcher.poll_s)
                for number, (trial, job, last) in list(running.items()):
                    last, pruned = self._report(study, trial, job, last)
                    running[number] = (trial, job, last)
                    state = RUNNING if not pruned else "pruned"
                    if pruned:
                        launcher.cancel(job)
                    elif time.monotonic() - job.started > 60 * self.cfg.launcher.timeout_min:
                        launcher.cancel(job)
                        state = "timeout"
                    else:
                        state = launcher.poll(job)
                    if state == RUNNING:
                        continue
                    del running[number]
                    self._finish(study, trial, job, state, launcher)
        finally:
            for trial, job, _ in running.values():  # an exception or Ctrl-C: no child left behind
                launcher.cancel(job)
                self._close_run(job.spec.folder, "KILLED")   # its trial stays RUNNING: the next run requeues it
            launcher.close()
        return self.verdicts(study)

    def _recover(self, study, launcher) -> None:
        """Trials a killed orchestrator left RUNNING end here. Their children, if still alive, are ended. A
        child that wrote its result is kept: a copy of its trial reads that result instead of training
        again. The others are queued again (same slot: arm, params, seed) and their MLflow runs marked
        KILLED. The copy is queued before the old trial fails, and only while none is queued: a kill
        between the two loses no trial and queues none twice."""
        queued = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ua = t.user_attrs
            lifeline.end(str(ua.get("process", "")))
            if ua.get("launcher") == self.cfg.launcher.name:
                launcher.forget(str(ua.get("job_id", "")))
            folder = Path(ua["folder"]) if ua.get("folder") else None
            finished = folder is not None and (folder / "result.json").is_file()
            if ua.get("slot") is None or ua["slot"] not in queued:
                attrs = {k: v for k, v in ua.items() if k not in _PER_ATTEMPT}
                if finished:
                    attrs["kept"] = str(folder)
                study.enqueue_trial(t.params, user_attrs=attrs)
                queued.add(ua.get("slot"))
            crash_point("requeue")
            if folder is not None and not finished:
                self._close_run(folder, "KILLED")
            study.tell(t.number, state=TrialState.FAIL)   # its fail_reason reads INTERRUPTED since it was submitted

    def _next_trial(self, study, choices: list[str]):
        r = self.cfg.remediation
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) and plan.promote(study, self.cfg,
                                                                                               self.registry):
            return None  # wait for the screening round before promoting
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = study.ask()
        else:
            configs = {t.user_attrs.get("config") for t in study.get_trials(deepcopy=False)
                       if t.user_attrs.get("origin") == "sampler"}
            if len(configs) >= r.extra_trials:
                return None
            trial = study.ask()
            trial.set_user_attr("role", TREATMENT)
            trial.set_user_attr("seed", 0)
            trial.set_user_attr("origin", "sampler")
            trial.set_user_attr("config", f"sampler-{trial.number}")
            trial.set_user_attr("slot", plan.slot(TREATMENT, 0, f"sampler-{trial.number}"))
        if trial.user_attrs.get("role") == TREATMENT:  # sampler trials explore on seed 0: no verdict rests on them
            iid = trial.suggest_categorical("intervention", choices)
            trial.set_user_attr("params", self.registry[iid].suggest(trial))
        return trial

    def _spec(self, trial, symptom: str, fork: int, ckpt: Path, parent: dict) -> ChildSpec:
        ua, r, cfg = trial.user_attrs, self.cfg.remediation, self.cfg
        role, seed = ua["role"], int(ua["seed"])
        iid, params = None, {}
        if role == TREATMENT:
            iid, params = trial.params["intervention"], ua.get("params", {})
        elif role == RANDOM:
            iid, params = ua["random_intervention"], ua["random_params"]
        patch = self.registry[iid].render(params) if iid else []
        folder = self.folder / "children" / symptom / f"trial-{trial.number:04d}-{role}-s{seed}"
        stop = min(fork + r.budget_steps, cfg.trainer.max_steps)
        # a SLURM child takes the CPUs its job was given (trainer.threads=0: SLURM_CPUS_PER_TASK); a local
        # one shares this machine's cores with its siblings
        threads = 0 if cfg.launcher.name == "slurm" else cfg.launcher.threads_per_child
        child = [f"trainer.fork={ckpt}", f"trainer.stop_at={stop}", f"trainer.seed={1000 + seed}",
                 f"trainer.out_dir={folder}", "trainer.progress=false",
                 f"trainer.threads={threads}", "trainer.ckpt_every=0",
                 "monitor.stop_on_symptom=false", f"monitor.knn_every={r.knn_every}", "probe.at_start=false",
                 "probe.linear=false", "remediation.enabled=false",
                 f"tracking.enabled={str(cfg.tracking.enabled).lower()}",
                 f"tracking.uri={self.tracking_uri()}", f"tracking.experiment={cfg.tracking.experiment}",
                 f"tracking.run_name={role}-{iid or 'none'}-s{seed}"]
        catalog = sorted(links.load().for_intervention(iid)) if iid else []
        tags = {"autofix.role": role, "autofix.symptom": symptom, "autofix.intervention": iid or "",
                "autofix.fork_step": str(fork), "autofix.seed": str(seed), "autofix.trial": str(trial.number),
                "autofix.origin": ua.get("origin", ""), "autofix.slot": ua.get("slot", ""),
                "autofix.patch": " ".join(patch), "autofix.catalog_ids": ",".join(map(str, catalog))[:4900]}
        return ChildSpec(trial.number, role, seed, symptom, self.experiment,
                         merge_overrides(self.parent_overrides, patch, child), str(folder), iid, params, patch,
                         parent["summary"].get("run_id"), tags, str(conf_dir()), self.search_dirs)

    def tracking_uri(self) -> str:
        return self.cfg.tracking.uri or default_uri()

    def _report(self, study, trial, job, last: int) -> tuple[int, bool]:
        """Pass new intermediate kNN values (steps after `last`) to the trial; True when the pruner stops a
        sampler trial. A child resumed after a requeue writes rows again from its checkpoint: skipped."""
        path = job.spec.folder / "progress.jsonl"
        if not path.is_file():
            return last, False
        pruned = False
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                break  # a line being written: read it next time
            if int(row["step"]) <= last:
                continue
            last = int(row["step"])
            if row.get("knn") is not None:
                trial.report(row["knn"], last)
                if trial.user_attrs.get("origin") == "sampler" and trial.should_prune():
                    pruned = True
        return last, pruned

    def _finish(self, study, trial, job, state: str, launcher) -> None:
        name = f"trial {trial.number} ({trial.user_attrs['role']}, {job.spec.intervention or '-'}, seed {job.spec.seed})"
        if state == DONE:
            crash_point("result")   # the child has written its result; the study does not hold it yet
        self._attach_logs(job, launcher)
        if state != DONE:   # killed, pruned or crashed without ending its MLflow run itself
            self._close_run(job.spec.folder, "FAILED" if state == FAILED else "KILLED")
        if state == DONE:
            res = json.loads((job.spec.folder / "result.json").read_text())
            for k in ("resolved", "severity", "steps", "seconds", "run_id"):
                trial.set_user_attr(k, res.get(k))
            trial.set_user_attr("folder", str(job.spec.folder))
            if res.get("diverged"):   # an outcome of its arm, counted as not resolved; never a kNN of 0
                trial.set_user_attr("outcome", V.DIVERGED)
                trial.set_user_attr("resolved", False)
                trial.set_user_attr("fail_reason", "diverged: its weights or loss are not finite")
                study.tell(trial, state=TrialState.FAIL)
                console.print(f"  [yellow]{name}: diverged[/]")
                return
            knn = res.get("knn")
            if knn is not None and math.isfinite(knn):
                trial.set_user_attr("fail_reason", "")
                study.tell(trial, knn)
                console.print(f"  {name}: kNN {knn:.3f}, "
                              f"{'resolved' if res.get('resolved') else 'still ' + job.spec.symptom}")
                return
            state = "nonfinite"
        if state == "pruned":
            trial.set_user_attr("fail_reason", "")
            study.tell(trial, state=TrialState.PRUNED)
            console.print(f"  {name}: pruned")
            return
        reason = {"timeout": f"timed out after {self.cfg.launcher.timeout_min} min",
                  "nonfinite": "the child diverged: its features are not finite, so it has no kNN"}.get(state) \
            or launcher.reason(job)
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("folder", str(job.spec.folder))
        study.tell(trial, state=TrialState.FAIL)
        console.print(f"  [red]{name}: failed[/]: {reason}")

    def _child_run(self, folder: Path):
        """(MLflow client, run id) of the child in `folder`, from the run.json it writes as soon as its run
        exists; None without tracking or before that."""
        record = folder / "run.json"
        if not self.cfg.tracking.enabled or not record.is_file():
            return None
        info = json.loads(record.read_text())
        return MlflowClient(info.get("tracking_uri") or self.tracking_uri()), info["run_id"]

    def _attach_logs(self, job, launcher) -> None:
        """The child's logs (and submitit's files) become artifacts of its MLflow run."""
        try:
            run = self._child_run(job.spec.folder)
            if run is None:
                return
            client, run_id = run
            for path in launcher.logs(job):
                client.log_artifact(run_id, str(path), "logs")
            for extra in ("spec.json", "preemptions.jsonl"):
                if (job.spec.folder / extra).is_file():
                    client.log_artifact(run_id, str(job.spec.folder / extra), "logs")
        except Exception as e:  # logs are a convenience: never let them fail the study
            console.print(f"[yellow]  could not attach logs of trial {job.spec.trial}: {e}[/]")

    def _close_run(self, folder: Path, status: str) -> None:
        """End the MLflow run of a child that cannot end it itself (killed); one already ended stays as it is."""
        try:
            run = self._child_run(folder)
            if run is not None and run[0].get_run(run[1]).info.status == "RUNNING":
                run[0].set_terminated(run[1], status)
        except Exception as e:
            console.print(f"[yellow]  could not mark the MLflow run in {folder} {status}: {e}[/]")

    # verdicts --------------------------------------------------------------------------------------
    def verdicts(self, study) -> list[V.Verdict]:
        control, random, arms = arms_from_trials(study.get_trials(deepcopy=False))
        promoted = study.user_attrs.get("promoted") or []
        return [V.decide(name, arm, control, random if self.cfg.remediation.random_arm else None,
                         self.cfg.remediation.confidence, screened=name not in promoted)
                for name, arm in sorted(arms.items())]


