"""Engines that run children. The orchestrator talks to them through four calls (submit, poll, cancel,
reason) and reads each child's result from its folder, so a new engine is one class here."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.remediation import LauncherConfig
from ..core import lifeline
from ..core.errors import ConfigError
from .child import ChildTask
from .child import main as child_main
from .spec import ChildSpec

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class Job:
    spec: ChildSpec
    handle: Any
    started: float = field(default_factory=time.monotonic)
    job_id: str = ""
    process: str = ""   # lifeline identity of a child on this machine: what a resumed orchestrator ends


class Launcher:
    def __init__(self, cfg: LauncherConfig, folder: Path):
        self.cfg, self.folder = cfg, Path(folder)

    @property
    def capacity(self) -> int:
        if self.cfg.max_parallel:
            return self.cfg.max_parallel
        return max(1, (os.cpu_count() or 1) // self.cfg.threads_per_child)

    def submit(self, spec: ChildSpec) -> Job:  # pragma: no cover - interface
        raise NotImplementedError

    def poll(self, job: Job) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def cancel(self, job: Job) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def reason(self, job: Job) -> str:
        """Why a child failed: the error it wrote itself, else what the engine knows."""
        err = job.spec.folder / "error.json"
        if err.is_file():
            try:
                return json.loads(err.read_text())["reason"]
            except (ValueError, KeyError):
                pass
        return self._engine_reason(job)

    def _engine_reason(self, job: Job) -> str:
        return "the child ended without a result"

    def logs(self, job: Job) -> list[Path]:
        """The child's log files, attached to its MLflow run when it ends."""
        return [p for p in [job.spec.folder / "child.log"] if p.is_file()]

    def forget(self, job_id: str) -> None:
        """A job an earlier (killed) orchestrator left behind, on a cluster (local ones: `lifeline.end`)."""

    def close(self) -> None:
        pass


def _child_env(threads: int, watch_parent: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    # one BLAS/OpenMP pool per child: N children on N cores, not N x N threads
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    if watch_parent:  # only where the child shares the orchestrator's machine
        env["AUTOFIX_WATCH_PARENT"] = lifeline.identity()
    return env


class LocalLauncher(Launcher):
    """Children as processes of their own: a child that crashes or is killed cannot take the orchestrator
    down. With `launcher.preload` (the default) they are forked from a server process that has imported
    torch, Hydra, MLflow and autofix once, instead of paying those imports (about 8 s on 2 cores) per
    child; each child is still a fresh process with its own memory."""

    def __init__(self, cfg: LauncherConfig, folder: Path):
        super().__init__(cfg, folder)
        self._ctx = None
        if cfg.preload:
            import multiprocessing as mp

            self._ctx = mp.get_context("forkserver")
            self._ctx.set_forkserver_preload(list(PRELOAD))

    def submit(self, spec: ChildSpec) -> Job:
        path = spec.write()
        env = _child_env(self.cfg.threads_per_child)
        if self._ctx is not None:
            proc = _Forked(self._ctx, str(path), str(spec.folder / "child.log"), env)
        else:
            log = open(spec.folder / "child.log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "autofix.remediate.child", str(path)], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
            log.close()
        return Job(spec, proc, job_id=str(proc.pid), process=lifeline.identity(proc.pid))

    def poll(self, job: Job) -> str:
        code = job.handle.poll()
        if code is None:
            return RUNNING
        return DONE if code == 0 and (job.spec.folder / "result.json").is_file() else FAILED

    def cancel(self, job: Job) -> None:
        if job.handle.poll() is None:
            job.handle.kill()
            job.handle.wait()

    def _engine_reason(self, job: Job) -> str:
        code = job.handle.returncode
        tail = _tail(job.spec.folder / "child.log")
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return f"child process {how}" + (f": {tail}" if tail else "")


# What the fork server imports once for every child it starts. torch._dynamo: the first optimizer a
# process builds imports it (1.9 s); sklearn: the digits and the data splits (imported where used, so a
# config check does without); the SQL store: MLflow's sqlite backend.
PRELOAD = ("torch", "torch._dynamo", "sklearn.datasets", "sklearn.model_selection", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "hydra", "omegaconf", "reference_models.data",
           "autofix.remediate.child", "autofix.trainer", "autofix.hydra_app", "autofix.monitor.health",
           "autofix.tracking")


def _forked_child(spec_path: str, log_path: str, env: dict[str, str]) -> None:
    """The child's entry point in a forked process: its output to child.log, its environment, then the
    same main() as `python -m autofix.remediate.child`."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)
    code = child_main([spec_path])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the fork server's inherited exit handlers


class _Forked:
    """A multiprocessing child behind the few Popen calls the launcher uses (pid, poll, kill, wait)."""

    def __init__(self, ctx, spec_path: str, log_path: str, env: dict[str, str]):
        self.proc = ctx.Process(target=_forked_child, args=(spec_path, log_path, env), daemon=False)
        self.proc.start()
        self.pid = self.proc.pid

    @property
    def returncode(self):
        return self.proc.exitcode

    def poll(self):
        return self.proc.exitcode

    def kill(self) -> None:
        self.proc.kill()

    def wait(self):
        self.proc.join()
        return self.proc.exitcode


class SubmititLauncher(Launcher):
    """Children through submitit's executors: `local` here, `slurm` on a cluster (the same code path)."""

    cluster = "local"

    def __init__(self, cfg: LauncherConfig, folder: Path):
        super().__init__(cfg, folder)
        import submitit

        self.executor = submitit.AutoExecutor(folder=str(self.folder / "submitit" / "%j"), cluster=self.cluster)
        self.executor.update_parameters(**self._parameters())

    def _parameters(self) -> dict:
        return {"timeout_min": self.cfg.timeout_min}

    def _env(self) -> dict[str, str]:
        return _child_env(self.cfg.threads_per_child)

    def submit(self, spec: ChildSpec) -> Job:
        path = spec.write()
        with _env(self._env()):  # submitit's executors pass the submitting environment on to the job
            job = self.executor.submit(ChildTask(str(path)))
        # submitit's local executor runs the child as a process whose pid is the job id
        process = lifeline.identity(int(job.job_id)) if self.cluster == "local" and str(job.job_id).isdigit() else ""
        return Job(spec, job, job_id=str(job.job_id), process=process)

    def logs(self, job: Job) -> list[Path]:
        if job.handle is None:   # a child a killed orchestrator left finished: its folder is all there is
            return super().logs(job)
        paths = job.handle.paths
        return [p for p in (paths.stdout, paths.stderr, paths.submission_file) if p.is_file()]

    def poll(self, job: Job) -> str:
        if not job.handle.done():
            return RUNNING
        return DONE if job.handle.exception() is None and (job.spec.folder / "result.json").is_file() else FAILED

    def cancel(self, job: Job) -> None:
        if not job.handle.done():
            job.handle.cancel(check=False)

    def _engine_reason(self, job: Job) -> str:
        exc = job.handle.exception()
        text = str(exc).strip().splitlines() if exc else []
        # submitit wraps the child's traceback: its last line names the error
        return f"submitit job {job.job_id} ({job.handle.state}): {text[-1] if text else 'no result'}"


class SlurmLauncher(SubmititLauncher):
    """Children as SLURM jobs through submitit's SLURM executor. Job states come from squeue (one call per
    poll for all children) rather than from submitit, whose state queries go through sacct: sacct needs
    the accounting daemon, which many small clusters (and the test cluster) do not run."""

    cluster = "slurm"
    ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "COMPLETING",
              "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}

    def __init__(self, cfg: LauncherConfig, folder: Path):
        check_available(cfg)
        quiet_sacct_warnings()
        super().__init__(cfg, folder)
        self._states: dict[str, tuple[str, str]] = {}
        self._polled = 0.0

    @property
    def capacity(self) -> int:
        return self.cfg.max_parallel or 8  # the cluster queues what it cannot run yet

    def _parameters(self) -> dict:
        c = self.cfg
        extra = dict(c.sbatch_args)
        params = {"timeout_min": c.time_min, "slurm_partition": c.partition, "cpus_per_task": c.cpus_per_child,
                  "mem_gb": c.mem_gb, "gpus_per_node": c.gpus_per_child or None, "slurm_account": c.account,
                  "slurm_qos": c.qos, "name": c.job_prefix, "slurm_additional_parameters": extra}
        return {k: v for k, v in params.items() if v not in (None, {})}

    def _env(self) -> dict[str, str]:
        return _child_env(self.cfg.cpus_per_child, watch_parent=False)

    def submit(self, spec: ChildSpec) -> Job:
        job = super().submit(spec)
        self._states[job.job_id] = ("PENDING", "")
        return job

    def _refresh(self) -> None:
        if time.monotonic() - self._polled < self.cfg.poll_s * 0.9:
            return
        out = subprocess.run(["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%r"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode:  # slurmctld busy or restarting: keep the last known states
            return
        states = {}
        for line in out.stdout.splitlines():
            jid, state, why = (line.split("|") + ["", ""])[:3]
            states[jid.strip()] = (state.strip(), why.strip())
        for jid in self._states:
            # a job that left squeue (MinJobAge passed) has ended; its folder says how
            self._states[jid] = states.get(jid, ("GONE", ""))
        self._polled = time.monotonic()

    def state(self, job: Job) -> tuple[str, str]:
        self._refresh()
        return self._states.get(job.job_id, ("GONE", ""))

    def poll(self, job: Job) -> str:
        state, _ = self.state(job)
        if state in self.ACTIVE:
            return RUNNING
        return DONE if state in ("COMPLETED", "GONE") and (job.spec.folder / "result.json").is_file() else FAILED

    def cancel(self, job: Job) -> None:
        self.forget(job.job_id)

    def forget(self, job_id: str) -> None:
        if job_id:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=60)

    def _engine_reason(self, job: Job) -> str:
        state, why = self.state(job)
        err = _tail(job.handle.paths.stderr, grep="slurmstepd") or _tail(job.handle.paths.stderr)
        what = f"SLURM job {job.job_id} {state.lower() if state != 'GONE' else 'left the queue'}"
        return what + (f" ({why})" if why and why != "None" else "") + (f": {err}" if err else "")


class _env:
    """Temporarily set environment variables (submitit's local executor copies the environment)."""

    def __init__(self, values: dict[str, str]):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tail(path: Path, n: int = 300, grep: str = "") -> str:
    """The last non-empty line of a log (containing `grep`, if given)."""
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip() and grep in l]
    except OSError:
        return ""
    return lines[-1][-n:] if lines else ""


class _SacctNotice(logging.Filter):
    """submitit asks sacct for job states; without the accounting daemon (slurmdbd) sacct fails and
    submitit warns at every poll, though results still come back through files. Say so once instead."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not _SacctNotice.said:
            _SacctNotice.said = True
            record.msg, record.args = ("sacct is not available on this cluster (no slurmdbd), so submitit cannot "
                                       "read job states; results still come back through files (said once)"), ()
            return True
        return False


def quiet_sacct_warnings() -> None:
    log = logging.getLogger("submitit")
    if not any(isinstance(f, _SacctNotice) for f in log.filters):
        log.addFilter(_SacctNotice())


def check_available(cfg: LauncherConfig) -> None:
    if cfg.name == "slurm" and not shutil.which("sbatch"):
        raise ConfigError("launcher=slurm: sbatch is not on PATH; run on a SLURM login node, or choose "
                          "launcher=local or launcher=submitit_local")


def build_launcher(cfg: LauncherConfig, folder: Path) -> Launcher:
    if cfg.name == "local":
        return LocalLauncher(cfg, folder)
    if cfg.name == "submitit_local":
        return SubmititLauncher(cfg, folder)
    if cfg.name == "slurm":
        return SlurmLauncher(cfg, folder)
    raise ConfigError(f"launcher.name: {cfg.name!r} is unknown; valid: local, submitit_local, slurm")
