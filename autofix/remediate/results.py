"""What a remediation leaves behind: the verdict table (markdown, HTML, terminal), plots of the symptom's
metric and the probe for parent, control, random arm and each treatment, the study's trials as CSV,
and the same on the parent's MLflow run (tags and artifacts)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table

from ..core.crashpoints import crash_point
from ..core.progress import console
from . import verdict as V
from .verdict import CONTROL, RANDOM, TREATMENT, arms_from_trials


def write(folder: Path, symptom: str, study, verdicts: list[V.Verdict], parent: dict, random_arm: bool,
          tracking_uri: str | None) -> dict[str, Path]:
    trials = study.get_trials(deepcopy=False)
    control, random, _ = arms_from_trials(trials)
    rows = V.table(verdicts, control, random if random_arm else None)
    out = folder / "results" / symptom
    out.mkdir(parents=True, exist_ok=True)
    title = f"Verdicts for {symptom} (fork at step {study.user_attrs.get('fork_step')})"
    files = {"md": out / "verdicts.md", "html": out / "verdicts.html", "csv": out / "trials.csv",
             "json": out / "verdicts.json"}
    noops = study.user_attrs.get("noops") or []
    skipped = f"Not tried, their patch is already in the parent's config: {', '.join(noops)}.\n\n" if noops else ""
    _whole(files["md"], f"# {title}\n\n{V.markdown(rows)}\n\n{skipped}{_legend()}\n")
    _whole(files["html"], V.html(rows, title))
    crash_point("verdicts")   # half the files written: a rerun writes them all again, from the study
    _whole(files["csv"], study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs",
                                                       "duration")).to_csv(index=False))
    _whole(files["json"], json.dumps([_verdict_dict(v) for v in verdicts], indent=1))
    files.update(plots(out, symptom, parent, trials))
    print_table(rows, title)
    parent_run = parent["summary"].get("run_id")
    if parent_run and tracking_uri:
        to_mlflow(tracking_uri, parent_run, symptom, verdicts, files, trials)
    return files


def _whole(path: Path, text: str) -> None:
    """Write all of `text` or leave what was there: a kill midway leaves no half table."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _legend() -> str:
    return ("kNN: mean final kNN accuracy over seeds. vs control / vs random: mean paired difference in final kNN "
            "with its t interval over seeds. helped = both intervals above 0 and the symptom resolved in at "
            "least half the seeds; 'kNN gain, symptom persists' and 'resolved, no kNN gain' = one half of that; "
            "hurt = the interval against the control below 0. diverged: the seeds whose child's weights or loss went "
            "non-finite (not resolved, no kNN: never counted as a kNN of 0); an arm that diverges on a larger "
            "share of its seeds than the control is named for it.")


def _verdict_dict(v: V.Verdict) -> dict:
    def iv(i: V.Interval):
        return {"mean": i.mean, "low": i.low, "high": i.high, "n": i.n}
    return {"intervention": v.intervention, "verdict": v.verdict, "resolved_rate": v.resolved_rate,
            "vs_control": iv(v.vs_control), "vs_random": iv(v.vs_random), "seeds": v.n_seeds, "diverged": v.diverged,
            "knn": v.knn, "steps": v.steps, "seconds": v.seconds, "failed": v.failed}


def print_table(rows: list[dict], title: str) -> None:
    if not rows:
        return
    if not console.is_terminal:  # a pipe or a log: markdown keeps every column whole
        print(f"{title}\n\n{V.markdown(rows)}\n", flush=True)
        return
    table = Table(*rows[0].keys(), title=title, box=None)
    for r in rows:
        style = {"helped": "green", "hurt": "red"}.get(str(r["verdict"]).split(" ")[0])
        table.add_row(*(str(v) for v in r.values()), style=style)
    console.print(table)


def _progress(folder: str | None) -> list[dict]:
    path = Path(folder or "") / "progress.jsonl"
    if not path.is_file():
        return []
    rows: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows.setdefault(int(row["step"]), row)  # a requeued child writes its steps after the checkpoint again
    return [rows[k] for k in sorted(rows)]


def plots(out: Path, symptom: str, parent: dict, trials) -> dict[str, Path]:
    """Two panels per symptom: its detector's metric and the kNN probe over steps; the parent as a black
    line, arms and each default-value treatment averaged over seeds."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache notices under Hydra's INFO logging
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    metric = next((k for h in parent["history"] for k in h if k not in ("step", "health/knn")), None)
    series: dict[str, list[list[dict]]] = {}
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        role = t.user_attrs.get("role")
        if role == TREATMENT and t.user_attrs.get("origin") != "default":
            continue
        label = {CONTROL: "control", RANDOM: "random patch"}.get(role) or t.params.get("intervention")
        series.setdefault(label, []).append(_progress(t.user_attrs.get("folder")))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, name in ((axes[0], "metric", metric or "symptom metric"), (axes[1], "knn", "kNN probe")):
        pkey = metric if key == "metric" else "health/knn"
        ph = [(h["step"], h[pkey]) for h in parent["history"] if pkey in h and h[pkey] is not None]
        if ph:
            ax.plot(*zip(*ph), color="black", linewidth=2, label="parent")
        for label, runs in sorted(series.items()):
            mean = _mean_curve(runs, key)
            if mean:
                style = {"control": dict(color="gray", linestyle="--"), "random patch": dict(color="gray", linestyle=":")}
                ax.plot(*zip(*mean), label=label, **style.get(label, {}))
        ax.set_xlabel("step")
        ax.set_title(name)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{symptom}: parent, arms and treatments (mean over seeds)")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"png": path}


def _mean_curve(runs: list[list[dict]], key: str) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = {}
    for rows in runs:
        for r in rows:
            v = r.get(key)
            if v is not None and math.isfinite(v):
                by_step.setdefault(int(r["step"]), []).append(v)
    return [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]


def to_mlflow(uri: str, parent_run: str, symptom: str, verdicts: list[V.Verdict], files: dict[str, Path],
              trials) -> None:
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    client = MlflowClient(uri)
    for v in verdicts:
        client.set_tag(parent_run, f"autofix.verdict.{symptom}.{v.intervention}", v.verdict)
    client.set_tag(parent_run, "autofix.remediated", symptom)
    for f in files.values():
        client.log_artifact(parent_run, str(f), artifact_path=f"remediation/{symptom}")
    by_iv = {v.intervention: v.verdict for v in verdicts}
    for t in trials:  # the verdict on every child run of a verdict's intervention
        run_id = t.user_attrs.get("run_id")
        if run_id and t.state == TrialState.COMPLETE and t.user_attrs.get("role") == TREATMENT:
            iv = t.params.get("intervention")
            client.set_tag(run_id, "autofix.verdict", by_iv.get(iv, "exploratory"))
