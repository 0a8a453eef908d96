"""MLflow tracking for one run: params, metrics, tags, artifacts. A disabled tracker does nothing,
so the trainer never branches on whether tracking is on."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report imports this module and needs no torch (which the config pulls in)
    from ..config.schema import TrackingConfig


def default_uri() -> str:
    """MLflow's own default since 3.x: a SQLite store in the working folder (artifacts in ./mlruns)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


# The schemes an MLflow tracking URI may have (a bare folder is a file store).
TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


# Their default ports, for the reachability check of a database server.
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_uri(uri: str, reach: bool = True) -> None:
    """A malformed tracking.uri fails before the run starts, not after its children trained; with `reach`,
    so does one that cannot be reached: a store whose folder cannot be made, a server that does not answer."""
    from urllib.parse import urlparse

    from ..core.errors import ConfigError
    from ..core.paths import check_writable

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme and scheme not in TRACKING_SCHEMES and len(scheme) > 1:   # len 1: a Windows drive letter
        raise ConfigError(f"tracking.uri: {uri!r} has scheme {scheme!r}; valid: a folder, or a URI with one "
                          f"of {', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db, http://host:5000)")
    if not reach:
        return
    if scheme == "sqlite":
        check_writable("tracking.uri", Path(uri[len("sqlite:///"):]).parent)
    elif scheme in ("", "file") or len(scheme) == 1:
        check_writable("tracking.uri", Path(parsed.path if scheme == "file" else uri))
    elif scheme in ("http", "https") or scheme in _DB_PORTS:
        _check_answers(uri, parsed.hostname or "localhost", parsed.port or _DB_PORTS.get(scheme) or
                       (443 if scheme == "https" else 80))


def _check_answers(uri: str, host: str, port: int, timeout: float = 5.0) -> None:
    """A server that nobody answers for: MLflow would retry it for minutes, after the parent trained."""
    import socket

    from ..core.errors import ConfigError

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"tracking.uri: {uri} cannot be reached ({e.strerror or e}); valid: a running tracking "
                          "server (mlflow server --port 5000), or a local store such as sqlite:///mlflow.db") from None


def open_client(uri: str):
    """An MlflowClient whose store exists. The first use of a fresh SQLite file creates MLflow's tables;
    two processes doing that at once (a --multirun sweep on a cluster, children started together) make
    one of them fail with "table already exists", so the first use is serialised with a lock file."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates or migrates the tables, one process at a time
    return client


class Tracker:
    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.uri = cfg.uri or default_uri()
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None,
              run_id: str | None = None, parent_run_id: str | None = None) -> None:
        if not self.enabled:
            return
        # MLflow's SQL store logs its schema migrations at INFO on first use: noise in a user's terminal.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self._client = open_client(self.uri)
        if run_id is None:
            exp = self._client.get_experiment_by_name(self.cfg.experiment)
            self.experiment_id = exp.experiment_id if exp else self._client.create_experiment(self.cfg.experiment)
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            run = self._client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
            self.log_params(params)
        else:  # resuming: keep writing into the same run
            self.run_id = run_id
            self.experiment_id = self._client.get_run(run_id).info.experiment_id
            self._client.update_run(run_id, status="RUNNING")
            self.set_tags(tags or {})  # unchanged ones are rewritten; new ones (a requeued job's id) added

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled or not params:
            return
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One batched call per logging step; non-finite values are logged as they are (MLflow keeps NaN)."""
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self._client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, str(v))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self._client.set_terminated(self.run_id, status=status)

    def where(self) -> str:
        if not self.enabled:
            return "tracking disabled"
        return f"run {self.run_id} in {self.uri} (view: mlflow ui --backend-store-uri {self.uri})"
