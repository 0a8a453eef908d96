"""The remediation loop for one experiment folder.

parent run (monitored; stops at its first symptom) -> fork point (a pinned checkpoint) -> one Optuna
study per symptom: control and random-patch arms and every candidate at its defaults are enqueued, then
the sampler picks `extra_trials` configurations; each trial is one child on one seed -> verdicts.
Everything lives in the folder (parent/, children/, optuna.db, remediation.json), so running the same
command again after a crash or a kill picks up where it stopped."""
from __future__ import annotations

import json
import math
import random as pyrandom
import time
from dataclasses import asdict
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError
from ..progress import console
from . import verdict as V
from .launchers import DONE, RUNNING, build_launcher
from .spec import ChildSpec, merge_overrides
from .verdict import CONTROL, RANDOM, TREATMENT, arms_from_trials


class ForkPoints:
    """A trainer hook beside the monitor: keeps the checkpoints a child may fork from (step 0, the last
    check where no detector's condition held, and each symptom's onset) out of the ring's rotation."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.healthy: list[int] = []

    def on_start(self, trainer) -> None:
        if trainer.step == 0:
            trainer.ring.pin(0)
            trainer.save()

    def after_step(self, trainer, out) -> None:
        if trainer.step % self.monitor.cfg.every:
            return
        for e in self.monitor.events:
            trainer.ring.pin(e.onset)
        if self.monitor.healthy() and not self.monitor.events:  # after a symptom the fork point stays put
            previous = self.healthy[-1] if self.healthy else 0
            self.healthy.append(trainer.step)
            trainer.ring.pin(trainer.step)
            if previous:  # step 0 stays pinned for fork=scratch
                trainer.ring.pinned.discard(previous)

    def on_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {"healthy": list(self.healthy)}

    def load_state_dict(self, state: dict) -> None:
        self.healthy = list(state["healthy"])


# ---- storage ----------------------------------------------------------------------------------------
def storage_for(cfg: RunConfig, folder: Path):
    """Optuna storage: SQLite in the run folder, a journal file there (for shared file systems), or a URL."""
    import optuna

    url = cfg.remediation.storage
    if url in (None, "") and cfg.launcher.name == "slurm":
        url = "journal"  # the orchestrator may itself run as a job on any node: SQLite locks fail on NFS
    if url in (None, "", "sqlite"):
        return f"sqlite:///{folder / 'optuna.db'}"
    if url == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    return optuna.storages.RDBStorage(url)


def _sampler(cfg: RunConfig):
    import optuna

    r = cfg.remediation
    if r.sampler == "random":
        return optuna.samplers.RandomSampler(seed=r.seed)
    return optuna.samplers.TPESampler(seed=r.seed, n_startup_trials=1)


def _pruner(cfg: RunConfig):
    import optuna

    name = cfg.remediation.pruner
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def promotion(ranked: list[str], n: int, family: dict[str, str] | None = None) -> list[str]:
    """The `n` candidates to replicate, from the screening round's ranking (best first). With `family`
    (intervention -> family), the best of each family comes before a second of any: three optimizer
    switches that all repair a divergence say less together than one of them beside a warm-up and a
    clip. Families run out before `n`: the next best fill the rest."""
    if family is None:
        return ranked[:n]
    firsts, seen = [], set()
    for iid in ranked:
        if family.get(iid, iid) not in seen:
            seen.add(family.get(iid, iid))
            firsts.append(iid)
    return (firsts + [i for i in ranked if i not in firsts])[:n]


# ---- the loop ---------------------------------------------------------------------------------------
class Orchestrator:
    def __init__(self, cfg: RunConfig, experiment: str, overrides: list[str], folder: Path,
                 config_text: str | None = None):
        from .. import interventions

        self.cfg, self.experiment, self.folder, self.config_text = cfg, experiment, Path(folder), config_text
        self.parent_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra", "remediation", "launcher"))]
        self.registry = interventions.load()
        r = cfg.remediation
        unknown = [c for c in r.candidates if c not in self.registry]
        if unknown:
            raise ConfigError(f"remediation.candidates: unknown intervention(s) {unknown}; valid: "
                              f"{', '.join(sorted(self.registry))}")
        if r.random_intervention and r.random_intervention not in self.registry:
            raise ConfigError(f"remediation.random_intervention: unknown intervention {r.random_intervention}; "
                              f"valid: {', '.join(sorted(self.registry))}")
        if r.knn_every % cfg.monitor.every:
            raise ConfigError(f"remediation.knn_every: {r.knn_every} is not a multiple of monitor.every "
                              f"({cfg.monitor.every})")

    # parent ----------------------------------------------------------------------------------------
    def parent(self) -> dict:
        """Train the parent (or resume it, or read it back when it already finished)."""
        from ..monitor.health import build_monitor
        from ..trainer import Trainer

        record = self.folder / "parent.json"
        if record.is_file():
            return json.loads(record.read_text())
        cfg = self.cfg
        cfg.monitor.stop_on_symptom = cfg.remediation.enabled and cfg.remediation.parent == "stop"
        cfg.trainer.ckpt_every = cfg.monitor.every  # every check leaves a checkpoint a child can fork from
        cfg.trainer.ckpt_keep = max(cfg.trainer.ckpt_keep, 3)
        cfg.tracking.tags = {**cfg.tracking.tags, "autofix.role": "parent"}
        pdir = self.folder / "parent"
        if (pdir / "checkpoints").is_dir() and any((pdir / "checkpoints").glob("step_*.pt")):
            cfg.trainer.resume = str(pdir)  # a parent interrupted mid-training continues
        hooks = build_monitor(cfg.monitor)
        forks = ForkPoints(hooks[0]) if hooks else None
        trainer = Trainer(cfg, pdir, hooks=hooks + ([forks] if forks else []), config_text=self.config_text)
        summary = trainer.fit()
        monitor = hooks[0] if hooks else None
        events = [asdict(e) for e in monitor.events] if monitor else []
        keep = ("health/knn",) + tuple({r.metric for d in cfg.monitor.detectors.values() for r in d.rules})
        history = [{k: v for k, v in row.items() if k == "step" or k in keep} for row in trainer.history]
        out = {"summary": summary, "events": events, "healthy_steps": forks.healthy if forks else [],
               "checkpoints": str(trainer.ring.folder), "history": [h for h in history if len(h) > 1],
               "max_steps": cfg.trainer.max_steps}
        record.write_text(json.dumps(out, indent=1, default=str))
        return out

    # one symptom -----------------------------------------------------------------------------------
    def fork_step(self, parent: dict, event: dict) -> int:
        mode = self.cfg.remediation.fork
        if mode == "scratch":
            return 0
        if mode == "onset":
            return int(event["onset"])
        healthy = [s for s in parent["healthy_steps"] if s < event["onset"]]
        return max(healthy) if healthy else 0

    def device_type(self) -> str:
        """Where the children will train ("auto" resolved here, as the parent resolved it)."""
        from ..build import pick_device

        return pick_device(self.cfg.trainer.device).type

    def config_dict(self) -> dict:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.structured(self.cfg))

    def candidates(self, symptom: str, config: dict) -> tuple[list, list]:
        """The interventions to try for `symptom`, and those left out because their patch would change
        nothing in the parent's config (`config`, as a dict: no child is spent on a run that is the control
        again)."""
        from .. import interventions

        found = interventions.candidates(symptom, self.cfg.method.name, self.cfg.model.backbone, self.registry,
                                         config, self.device_type())
        if self.cfg.remediation.candidates:
            found = [iv for iv in found if iv.id in self.cfg.remediation.candidates]
        changes = {iv.id: iv.changes(config) for iv in found}
        return [iv for iv in found if changes[iv.id]], [iv for iv in found if not changes[iv.id]]

    def random_pool(self, symptom: str, config: dict) -> list:
        """What the random patch is drawn from. By default the applicable interventions that do not
        target `symptom`: drawn from all of them, the random patch can be a candidate itself, and against
        itself no candidate can win, so its verdict would turn on `remediation.seed`. A method whose every
        intervention targets the symptom falls back to all of them."""
        from .. import interventions

        pool = interventions.applicable(self.cfg.method.name, self.cfg.model.backbone, self.registry,
                                        config, self.device_type())
        if self.cfg.remediation.random_pool == "untargeted":
            pool = [iv for iv in pool if symptom not in iv.symptoms] or pool
        pinned = self.cfg.remediation.random_intervention
        if pinned and self.cfg.remediation.random_arm:
            if pinned not in {iv.id for iv in pool}:
                raise ConfigError(f"remediation.random_intervention: {pinned} is not in the random pool for "
                                  f"{symptom} ({self.cfg.remediation.random_pool}); valid: "
                                  f"{', '.join(sorted(iv.id for iv in pool))}")
            pool = [iv for iv in pool if iv.id == pinned]
        return pool

    def remediate(self, parent: dict, event: dict) -> list[V.Verdict]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        r, symptom = self.cfg.remediation, event["id"]
        fork = self.fork_step(parent, event)
        ckpt = Path(parent["checkpoints"]) / f"step_{fork:08d}.pt"
        if not ckpt.is_file():
            raise ConfigError(f"no checkpoint at the fork point (step {fork}): {ckpt}")
        config = self.config_dict()
        cands, noops = self.candidates(symptom, config)
        pool = self.random_pool(symptom, config)
        if noops:
            console.print(f"  not tried, already in the parent's config: {', '.join(iv.id for iv in noops)}")
        if not cands:
            console.print(f"[yellow]no intervention targets {symptom} for {self.cfg.method.name}; nothing to try[/]")
            return []
        study = optuna.create_study(study_name=symptom, storage=storage_for(self.cfg, self.folder),
                                    direction="maximize", sampler=_sampler(self.cfg), pruner=_pruner(self.cfg),
                                    load_if_exists=True)
        if not study.user_attrs.get("planned"):
            self._plan(study, cands, noops, pool, fork, config)
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
                    spec = self._spec(trial, symptom, fork, ckpt, parent)
                    job = launcher.submit(spec)
                    (spec.folder / "job.json").write_text(json.dumps({"launcher": self.cfg.launcher.name,
                                                                      "job_id": job.job_id, "trial": trial.number}))
                    trial.set_user_attr("job_id", job.job_id)
                    trial.set_user_attr("launcher", self.cfg.launcher.name)
                    running[trial.number] = (trial, job, -1)
                if not running:
                    if study.user_attrs.get("promoted") is None:
                        self._promote(study)
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
            launcher.close()
        return self.verdicts(study)

    def _plan(self, study, cands, noops, pool, fork: int, config: dict) -> None:
        r = self.cfg.remediation
        # One random patch, replicated on every seed like the treatments, so it is compared seed by seed.
        # A draw that would leave the config as it is (a default already in place) is another control: redraw.
        rng = pyrandom.Random(r.seed)
        for _ in range(1000):
            iv = rng.choice(pool)
            drawn = {name: _draw(p, rng) for name, p in iv.space.items()}
            if iv.changes(config, drawn):
                break
        else:
            raise ConfigError(f"the random arm: no draw of {', '.join(i.id for i in pool)} changes this config")
        if r.random_arm:
            console.print(f"  random patch: {iv.id} {drawn}")
        for s in range(r.seeds):
            study.enqueue_trial({}, user_attrs={"role": CONTROL, "seed": s, "origin": "arm"})
            if r.random_arm:
                study.enqueue_trial({}, user_attrs={"role": RANDOM, "seed": s, "origin": "arm",
                                                    "random_intervention": iv.id, "random_params": drawn})
        for iv in cands:  # every candidate once, on seed 0; the most promising get the other seeds
            study.enqueue_trial(_fixed(iv), user_attrs={"role": TREATMENT, "seed": 0, "origin": "default",
                                                        "config": f"{iv.id}:default"})
        study.set_user_attr("noops", [iv.id for iv in noops])
        study.set_user_attr("planned", True)
        study.set_user_attr("fork_step", fork)

    def _recover(self, study, launcher) -> None:
        """Trials left RUNNING by a killed orchestrator failed; queue them again (same arm, params, seed).
        Their jobs, if a cluster still runs them, are cancelled: the requeued trial starts afresh."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("launcher") == self.cfg.launcher.name:
                launcher.forget(str(t.user_attrs.get("job_id", "")))
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "orchestrator interrupted; requeued")
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items() if k != "fail_reason"})

    def _promote(self, study) -> bool:
        """Racing: once every candidate has run at its defaults on seed 0, the `promote` best (resolved
        first, then kNN) run on the remaining seeds and get a verdict; the others are screened out.
        Returns True while the screening round is still running."""
        from optuna.trial import TrialState

        if study.user_attrs.get("promoted") is not None:
            return False
        first = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("origin") == "default"]
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in first):
            return True
        done = [t for t in first if t.state == TrialState.COMPLETE]
        ranked = sorted(done, key=lambda t: (bool(t.user_attrs.get("resolved")), t.value), reverse=True)
        chosen = promotion([t.params["intervention"] for t in ranked], self.cfg.remediation.promote,
                           {iid: self.registry[iid].family for iid in self.registry}
                           if self.cfg.remediation.promote_diverse else None)
        for iid in chosen:
            for s in range(1, self.cfg.remediation.seeds):
                study.enqueue_trial(_fixed(self.registry[iid]),
                                    user_attrs={"role": TREATMENT, "seed": s, "origin": "default",
                                                "config": f"{iid}:default"})
        study.set_user_attr("promoted", chosen)
        if chosen:
            console.print(f"  promoted to {self.cfg.remediation.seeds} seeds: {', '.join(chosen)}")
        return False

    def _next_trial(self, study, choices: list[str]):
        from optuna.trial import TrialState

        r = self.cfg.remediation
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) and self._promote(study):
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
        if trial.user_attrs.get("role") == TREATMENT:  # sampler trials explore on seed 0: no verdict rests on them
            iid = trial.suggest_categorical("intervention", choices)
            trial.set_user_attr("params", self.registry[iid].suggest(trial))
        return trial

    def _spec(self, trial, symptom: str, fork: int, ckpt: Path, parent: dict) -> ChildSpec:
        from .. import links
        from ..cli import CONF_DIR

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
                 f"tracking.uri={self._tracking_uri()}", f"tracking.experiment={cfg.tracking.experiment}",
                 f"tracking.run_name={role}-{iid or 'none'}-s{seed}"]
        catalog = sorted(links.load().for_intervention(iid)) if iid else []
        tags = {"autofix.role": role, "autofix.symptom": symptom, "autofix.intervention": iid or "",
                "autofix.fork_step": str(fork), "autofix.seed": str(seed), "autofix.trial": str(trial.number),
                "autofix.origin": ua.get("origin", ""),
                "autofix.patch": " ".join(patch), "autofix.catalog_ids": ",".join(map(str, catalog))[:4900]}
        return ChildSpec(trial.number, role, seed, symptom, self.experiment,
                         merge_overrides(self.parent_overrides, patch, child), str(folder), iid, params, patch,
                         parent["summary"].get("run_id"), tags, str(CONF_DIR))

    def _tracking_uri(self) -> str:
        from ..tracking import default_uri
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
        from optuna.trial import TrialState

        name = f"trial {trial.number} ({trial.user_attrs['role']}, {job.spec.intervention or '-'}, seed {job.spec.seed})"
        self._attach_logs(job, launcher)
        if state == DONE:
            res = json.loads((job.spec.folder / "result.json").read_text())
            for k in ("resolved", "severity", "steps", "seconds", "run_id"):
                trial.set_user_attr(k, res.get(k))
            trial.set_user_attr("folder", str(job.spec.folder))
            knn = res.get("knn")
            if knn is not None and math.isfinite(knn):
                study.tell(trial, knn)
                console.print(f"  {name}: kNN {knn:.3f}, "
                              f"{'resolved' if res.get('resolved') else 'still ' + job.spec.symptom}")
                return
            state = "nonfinite"
        if state == "pruned":
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

    def _attach_logs(self, job, launcher) -> None:
        """The child's logs (and submitit's files) become artifacts of its MLflow run, found through the
        run.json the child writes as soon as its run exists."""
        record = job.spec.folder / "run.json"
        if not self.cfg.tracking.enabled or not record.is_file():
            return
        try:
            from mlflow.tracking import MlflowClient

            info = json.loads(record.read_text())
            client = MlflowClient(info.get("tracking_uri") or self._tracking_uri())
            for path in launcher.logs(job):
                client.log_artifact(info["run_id"], str(path), "logs")
            for extra in ("spec.json", "preemptions.jsonl"):
                if (job.spec.folder / extra).is_file():
                    client.log_artifact(info["run_id"], str(job.spec.folder / extra), "logs")
        except Exception as e:  # logs are a convenience: never let them fail the study
            console.print(f"[yellow]  could not attach logs of trial {job.spec.trial}: {e}[/]")

    # verdicts --------------------------------------------------------------------------------------
    def verdicts(self, study) -> list[V.Verdict]:
        control, random, arms = arms_from_trials(study.get_trials(deepcopy=False))
        promoted = study.user_attrs.get("promoted") or []
        return [V.decide(name, arm, control, random if self.cfg.remediation.random_arm else None,
                         self.cfg.remediation.confidence, screened=name not in promoted)
                for name, arm in sorted(arms.items())]


def _fixed(iv) -> dict:
    """An intervention at its defaults as fixed trial parameters."""
    return {"intervention": iv.id, **{f"{iv.id}.{k}": v for k, v in iv.defaults().items()}}


def _draw(p, rng: pyrandom.Random):
    if p.type == "categorical":
        return rng.choice(list(p.choices))
    if p.log:
        value = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    else:
        value = rng.uniform(p.low, p.high)
    return int(round(value)) if p.type == "int" else value
