"""One experiment end to end, in its run folder: the parent, then (when it shows a symptom and remediation
is on) the loop for each symptom to remediate. The run folder is chosen from the config, so the same
command after a crash or a kill resumes in the same folder instead of starting over."""
from __future__ import annotations

import json
from pathlib import Path

from ..config.schema import RunConfig
from ..core.progress import console
from ..run.tracking import default_uri
from .folder import claim, fingerprint, hold, study_name
from .orchestrator import Orchestrator
from .parent import train_parent
from .results import write
from .study import load_study


def run_folder(cfg: RunConfig, root: Path | str = "outputs") -> Path:
    """outputs/<name>/<fingerprint>[-k]: the first such folder whose run did not finish, else a new one."""
    base = Path(root) / cfg.name / fingerprint(cfg)
    k = 1
    while True:
        folder = base if k == 1 else base.with_name(f"{base.name}-{k}")
        if not (folder / "done.json").is_file():
            return folder
        k += 1


def run_experiment(cfg: RunConfig, experiment: str, overrides: list[str], folder: Path,
                   config_text: str | None = None, search_dirs: list[str] = ()) -> dict:
    folder = Path(folder)
    with hold(folder):   # one orchestrator per folder: a second one ends in a line naming the holder
        return _run(cfg, experiment, overrides, folder, config_text, search_dirs)


def _run(cfg: RunConfig, experiment: str, overrides: list[str], folder: Path, config_text: str | None,
         search_dirs: list[str]) -> dict:
    resuming = (folder / "manifest.json").is_file()
    claim(folder, cfg, cfg.tracking.uri or default_uri())   # the folder holds this config, or it says what differs
    if resuming:
        console.print(f"[bold]resuming[/] {folder}")
    orch = Orchestrator(cfg, experiment, overrides, folder, config_text, search_dirs)
    parent = train_parent(cfg, folder, config_text)
    events = parent["events"]
    done: dict = {"parent": parent["summary"], "symptoms": [e["id"] for e in events], "remediated": {}}
    r = cfg.remediation
    if events and r.enabled:
        todo = events if r.symptoms == "all" else events[:1]
        for event in todo:
            verdicts = orch.remediate(parent, event)
            if verdicts:
                study = load_study(cfg, folder, study_name(folder, event["id"]))
                uri = orch.tracking_uri() if cfg.tracking.enabled else None
                files = write(folder, event["id"], study, verdicts, parent, r.random_arm, uri)
                done["remediated"][event["id"]] = {"verdicts": {v.intervention: v.verdict for v in verdicts},
                                                   "table": str(files["md"])}
    elif events:
        console.print("remediation is off (remediation.enabled=false): symptoms reported, no child launched")
    (folder / "done.json").write_text(json.dumps(done, indent=1, default=str))
    return done
