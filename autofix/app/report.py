"""`python -m autofix report`: fix leaderboards and the evidence file, read from MLflow (not local files),
so they can be made anywhere the tracking store is reachable.

    python -m autofix report [--experiment autofix | --run PARENT_RUN_ID] [--html FILE] [--uri URI]
    python -m autofix report --evidence [--out evidence.csv] [--uri URI]
"""
from __future__ import annotations

import argparse
import csv
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.progress import console
from ..remediate import verdict as V
from ..remediate.results import print_table
from ..remediate.verdict import arms_from_trials
from ..run.tracking import default_uri


@dataclass
class ChildRecord:
    """A child run in the shape the verdict code reads (like an Optuna trial)."""
    state: object
    value: float | None
    user_attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    number: int = 0   # its trial's number: of two runs of one slot, the later one counts


def _client(uri: str | None):
    import logging

    from mlflow.tracking import MlflowClient
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(uri or default_uri())


def parent_runs(client, experiment: str | None, run_id: str | None) -> list:
    if run_id:
        try:
            return [client.get_run(run_id)]
        except Exception:
            raise UserError(f"no MLflow run {run_id!r} in {client.tracking_uri}") from None
    exp = client.get_experiment_by_name(experiment or "autofix")
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(f"no MLflow experiment {experiment!r} in {client.tracking_uri}; valid: {', '.join(names) or 'none'}")
    return client.search_runs([exp.experiment_id], "tags.`autofix.role` = 'parent'", max_results=5000)


def children(client, parent) -> list[ChildRecord]:
    from optuna.trial import TrialState

    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=50000)
    out = []
    for r in runs:
        t = r.data.tags
        knn = r.data.metrics.get("probe/knn")
        ok = (r.info.status == "FINISHED" and knn is not None and math.isfinite(knn) and "autofix.resolved" in t
              and t.get("autofix.outcome") != "diverged")   # a diverged child's kNN (near 0) measures nothing
        ua = {"role": t.get("autofix.role"), "seed": int(t.get("autofix.seed", 0)), "origin": t.get("autofix.origin"),
              "resolved": t.get("autofix.resolved") == "true", "steps": int(float(t.get("autofix.steps", 0) or 0)),
              "seconds": float(t.get("autofix.seconds", 0) or 0), "symptom": t.get("autofix.symptom"),
              "catalog": t.get("autofix.catalog_ids", ""), "run_id": r.info.run_id, "outcome": t.get("autofix.outcome")}
        if t.get("autofix.slot"):
            ua["slot"] = t["autofix.slot"]
        out.append(ChildRecord(TrialState.COMPLETE if ok else TrialState.FAIL, knn, ua,
                               {"intervention": t.get("autofix.intervention")}, int(t.get("autofix.trial", 0) or 0)))
    return out


def leaderboards(client, parents, confidence: float = 0.95) -> list[tuple[str, str, list[dict]]]:
    """(parent run id, symptom, rows) per remediated symptom."""

    boards = []
    for p in parents:
        kids = children(client, p)
        for symptom in sorted({k.user_attrs["symptom"] for k in kids if k.user_attrs.get("symptom")}):
            trials = [k for k in kids if k.user_attrs["symptom"] == symptom]
            control, random, arms = arms_from_trials(trials)
            has_random = bool(random.seeds) or random.failed
            # racing: a candidate that ran on one seed only was screened out
            verdicts = [V.decide(n, a, control, random if has_random else None, confidence,
                                 screened=a.seeds + a.failed < 2) for n, a in sorted(arms.items())]
            boards.append((p.info.run_id, symptom, V.table(verdicts, control, random if has_random else None)))
    return boards


def evidence(client, experiment: str | None) -> list[dict]:
    """Per catalog entry and intervention, over every remediation in the store: the seeds tried, the
    resolved rate, and the kNN change against the control (paired by seed within each study) with its
    t interval."""
    from optuna.trial import TrialState

    pooled: dict[str, dict] = {}
    for p in parent_runs(client, experiment, None):
        kids = children(client, p)
        controls = {(k.user_attrs["symptom"], k.user_attrs["seed"]): k.value for k in kids
                    if k.user_attrs["role"] == "control" and k.state == TrialState.COMPLETE}
        for k in kids:
            ua = k.user_attrs
            if ua["role"] != "treatment" or ua.get("origin") != "default" or k.state != TrialState.COMPLETE:
                continue
            base = controls.get((ua["symptom"], ua["seed"]))
            if base is None:
                continue
            iv = k.params["intervention"]
            rec = pooled.setdefault(iv, {"diffs": [], "resolved": [], "catalog": ua["catalog"], "symptoms": set()})
            rec["diffs"].append(k.value - base)
            rec["resolved"].append(ua["resolved"])
            rec["symptoms"].add(ua["symptom"])
    rows = []
    for iv, rec in sorted(pooled.items()):
        d = rec["diffs"]
        interval = V.paired_interval(dict(enumerate(d)), {i: 0.0 for i in range(len(d))})
        for entry in [e for e in rec["catalog"].split(",") if e] or [""]:
            rows.append({"catalog_entry": entry, "intervention": iv, "symptoms": " ".join(sorted(rec["symptoms"])),
                         "n": len(d), "resolved_rate": round(sum(rec["resolved"]) / len(d), 3),
                         "effect_vs_control": round(interval.mean, 4),
                         "low": round(interval.low, 4) if interval.n > 1 else "",
                         "high": round(interval.high, 4) if interval.n > 1 else ""})
    return sorted(rows, key=lambda r: (int(r["catalog_entry"] or 0), r["intervention"]))


def main(args: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m autofix report", description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="autofix")
    ap.add_argument("--run", help="one parent run id")
    ap.add_argument("--uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    ap.add_argument("--html", help="also write the leaderboards (and the parents' plots) as HTML here")
    ap.add_argument("--evidence", action="store_true", help="aggregate every remediation in the store")
    ap.add_argument("--out", default="evidence.csv", help="with --evidence: the CSV to write")
    try:
        ns = ap.parse_args(args)
    except SystemExit as e:
        return int(e.code or 0)
    client = _client(ns.uri)
    if ns.evidence:
        rows = evidence(client, ns.experiment)
        if not rows:
            console.print("no remediation with a control in this store yet")
            return 0
        with open(ns.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        console.print(f"wrote {len(rows)} rows (catalog entry x intervention) to {ns.out}")
        return 0
    parents = parent_runs(client, ns.experiment, ns.run)
    boards = leaderboards(client, parents)
    if not boards:
        console.print("no remediated parent run found (a healthy run launches no child)")
        return 0

    for run_id, symptom, rows in boards:
        print_table(rows, f"{symptom} (parent run {run_id})")
    if ns.html:
        _write_html(client, boards, Path(ns.html))
        console.print(f"wrote {ns.html}")
    return 0


def _write_html(client, boards, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["<html><head><meta charset='utf-8'><title>autofix report</title></head><body><h1>autofix report</h1>"]
    for run_id, symptom, rows in boards:
        table = V.html(rows, f"{symptom} (parent run {run_id})")
        parts.append(table.split("<body>", 1)[1].rsplit("</body>", 1)[0])
        try:
            local = client.download_artifacts(run_id, f"remediation/{symptom}/curves.png", str(path.parent))
            parts.append(f"<img src='{html.escape(Path(local).relative_to(path.parent).as_posix())}' width='900'>")
        except Exception:  # a parent without plots (tracking was partial): the table alone
            pass
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
