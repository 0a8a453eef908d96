"""Engines that run children. The orchestrator talks to them through four calls (submit, poll, cancel,
reason) and reads each child's result from its folder, so a new engine is one class here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import LauncherConfig
from .spec import ChildSpec

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class Job:
    spec: ChildSpec
    handle: Any
    started: float = field(default_factory=time.monotonic)
    job_id: str = ""


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

    def close(self) -> None:
        pass


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # one BLAS/OpenMP pool per child: N children on N cores, not N x N threads
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "AUTOFIX_WATCH_PARENT": str(os.getpid())})
    return env


class LocalLauncher(Launcher):
    """Children as subprocesses: a child that crashes or is killed cannot take the orchestrator down."""

    def submit(self, spec: ChildSpec) -> Job:
        path = spec.write()
        log = open(spec.folder / "child.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "autofix.remediate.child", str(path)], stdout=log,
                                stderr=subprocess.STDOUT, env=_child_env(self.cfg.threads_per_child))
        log.close()
        return Job(spec, proc, job_id=str(proc.pid))

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


class SubmititLauncher(Launcher):
    """Children through submitit's executors: `local` here, `slurm` on a cluster (the same code path)."""

    cluster = "local"

    def __init__(self, cfg: LauncherConfig, folder: Path):
        super().__init__(cfg, folder)
        import submitit

        self.executor = submitit.AutoExecutor(folder=str(self.folder / "submitit" / "%j"), cluster=self.cluster)
        self.executor.update_parameters(timeout_min=cfg.timeout_min, **self._parameters())

    def _parameters(self) -> dict:
        return {}

    def submit(self, spec: ChildSpec) -> Job:
        from .child import run_child

        path = spec.write()
        with _env(_child_env(self.cfg.threads_per_child)):
            job = self.executor.submit(run_child, str(path))
        return Job(spec, job, job_id=str(job.job_id))

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


def _tail(path: Path, n: int = 300) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1][-n:] if lines else ""


def build_launcher(cfg: LauncherConfig, folder: Path) -> Launcher:
    if cfg.name == "local":
        return LocalLauncher(cfg, folder)
    if cfg.name == "submitit_local":
        return SubmititLauncher(cfg, folder)
    raise ConfigError(f"launcher.name: {cfg.name!r} is not available yet; valid: local, submitit_local")
