"""docs/detection.md from the recorded runs (docs/data/detection.json.gz), re-judged by today's detectors:
nothing trains. Called by scripts/fault_bench.py; on its own:

    python scripts/detection_table.py

Verdicts (false-alarm bounds, recall, first-symptom rates) use held-out seeds only; calibration runs are
shown apart, as what the thresholds were set on.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import records as store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "detection.json.gz"
OUT = ROOT / "docs" / "detection.md"


def judged(records: list[dict]) -> tuple[list[dict], str]:
    """Each record with `events` replaced by today's detectors' verdict on its checks; the detector set's hash."""
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config
    from autofix.knowledge.links import catalog_ids
    from autofix.monitor.calibration import detector_set_hash, detectors_for, replay

    ids, monitors, out = catalog_ids(), {}, []
    for r in records:
        if r["method"] not in monitors:
            monitors[r["method"]] = to_run_config(compose(r["method"], [])).monitor
        dets = detectors_for(monitors[r["method"]], r["method"], r.get("backbone"), ids)
        events = replay(r["checks"], r["max_steps"], dets)
        judged_by = [d.name for d in dets if d.last_hit is not None]   # past warm-up, with its metrics measured
        out.append({**r, "live_events": r["events"], "events": events, "judged_by": judged_by})
    return out, detector_set_hash(to_run_config(compose("vicreg", [])).monitor)   # one detector set for all methods


def _rate(k: int, n: int) -> str:
    from autofix.monitor.calibration import interval

    lo, hi = interval(k, n)
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def healthy_section(runs: list[dict], title: str) -> list[str]:
    from autofix.monitor.calibration import upper_bound

    lines = [f"## {title}", "", "| method | runs | with an alarm | rate | 95% upper bound |", "|---|---:|---:|---:|---:|"]
    groups = {m: [r for r in runs if r["method"] == m] for m in sorted({r["method"] for r in runs})}
    for name, rs in [*groups.items(), ("all", runs)]:
        k = sum(bool(r["events"]) for r in rs)
        lines.append(f"| {name} | {len(rs)} | {k} | {k / max(len(rs), 1):.3f} | {upper_bound(k, len(rs)):.3f} |")
    alarms = [r for r in runs if r["events"]]
    lines += ["", "Alarms: " + ("; ".join(f"{r['method']} {r['variant'] or 'default'} seed {r['seed']}: "
                                          + ", ".join(f"{e['id']} ({e['detector']})@{e['step']}" for e in r["events"])
                                          for r in alarms) or "none") + ".", ""]
    failed = [r for r in runs if r.get("error")]
    if failed:
        lines += ["Failed runs: " + "; ".join(f"{r['method']} seed {r['seed']}: {r['error'][:100]}" for r in failed), ""]
    return lines


def fault_section(runs: list[dict], title: str) -> list[str]:
    from autofix.monitor.calibration import first_symptoms

    lines = [f"## {title}", "",
             "| fault | method | expected | runs | recall [95% CI] | named first | symptoms per run | also fired (runs) |",
             "|---|---|---|---:|---|---|---:|---|"]
    by_symptom: dict[str, list[int]] = {}
    for name in sorted({r["fault"] for r in runs}):
        rs = [r for r in runs if r["fault"] == name and not r.get("error")]
        if not rs:
            lines.append(f"| {name} | - | - | 0 | run failed | - | - | - |")
            continue
        for want in rs[0]["expects"]:
            hits = [want in {e["id"] for e in r["events"]} for r in rs]
            first = [want in first_symptoms(r["events"]) for r in rs]
            by_symptom.setdefault(want, []).extend(hits)
            per_run = [len({e["id"] for e in r["events"]}) for r in rs]
            others = Counter(e for r in rs for e in {e["id"] for e in r["events"]} - {want})
            lines.append(f"| {name} | {rs[0]['method']} | {want} | {len(rs)} | {_rate(sum(hits), len(rs))} | "
                         f"{_rate(sum(first), len(rs))} | {sum(per_run) / len(rs):.1f} (max {max(per_run)}) | "
                         f"{', '.join(f'{k} ({v})' for k, v in others.most_common()) or '-'} |")
    lines += ["", "Recall per symptom, over every fault that expects it:", "",
              "| symptom | recall [95% CI] |", "|---|---|"]
    lines += [f"| {s} | {_rate(sum(h), len(h))} |" for s, h in sorted(by_symptom.items())]
    return lines + [""]


def detector_section(runs: list[dict]) -> list[str]:
    """How many calibration runs each detector judged (it was set on those), and its alarms on them."""
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config

    monitor = to_run_config(compose("vicreg", [])).monitor
    cal = [r for r in runs if r["role"] == "calibration" and not r.get("error")]
    lines = ["## Detectors and the calibration runs they were set on", "",
             "A detector judges a run when at least one check past its warm-up has the metrics it reads.", "",
             "| detector | symptom | calibration runs it judged (healthy / fault) | fires on healthy | fires on faults |",
             "|---|---|---:|---:|---:|"]
    for name, d in sorted(monitor.detectors.items()):
        if not d.symptom or not d.enabled:
            continue
        applies = [r for r in cal if name in r["judged_by"]]
        h = [r for r in applies if not r["fault"]]
        f = [r for r in applies if r["fault"]]
        fired = lambda rs: sum(any(e["detector"] == name for e in r["events"]) for r in rs)  # noqa: E731
        lines.append(f"| {name} | {d.symptom} | {len(h)} / {len(f)} | {fired(h)} | {fired(f)} |")
    return lines + [""]


def page(records: list[dict], plan) -> str:
    runs, digest = judged(records)
    commits = sorted({r.get("commit", "?") for r in runs})
    held = [r for r in runs if r["role"] == "held_out"]
    cal = [r for r in runs if r["role"] == "calibration"]
    changed = sum(r["events"] != r["live_events"] for r in runs)
    lines = [
        "# Detection", "",
        "Generated by `python scripts/detection_table.py` (or `scripts/fault_bench.py`) from "
        "`docs/data/detection.json.gz`; do not edit by hand. Nothing trains: every recorded check is re-judged "
        f"by today's detectors (`conf/monitor/default.yaml`, detector set `{digest}`). Runs recorded at commit "
        f"{', '.join(commits) or '-'}; {changed} of {len(runs)} runs raise other events today than when they ran.", "",
        f"Seeds (`conf/monitor/_calibration.yaml`): calibration {list(plan.calibration)} (burned: "
        f"{', '.join(f'{s}: {w}' for s, w in plan.burned.items()) or 'none'}); held out {list(plan.held_out)}. "
        "Thresholds are set on calibration seeds only; the verdict tables use held-out seeds only.", "",
        "Rates are runs with the event over runs; intervals are two-sided 95% Clopper-Pearson, bounds one-sided "
        "95% Clopper-Pearson upper bounds. A healthy run's alarm is any detector firing: the per-run "
        "family-wise rate. 'Named first' is the expected symptom among those with the earliest onset (ties "
        "count), the one the loop would remediate.", ""]
    if not held:
        lines += ["**No held-out runs are recorded yet**: no verdict below.", ""]
    healthy_held = [r for r in held if not r["fault"]]
    if healthy_held:
        lines += healthy_section(healthy_held, "Healthy runs, held out (the false-alarm verdict)")
    if any(r["fault"] for r in held):
        lines += fault_section([r for r in held if r["fault"]], "Faults, held out (the recall verdict)")
    lines += detector_section(runs)
    if cal:
        lines += healthy_section([r for r in cal if not r["fault"]], "Healthy runs, calibration (not a verdict)")
        lines += fault_section([r for r in cal if r["fault"]], "Faults, calibration (not a verdict)")
    return "\n".join(lines) + "\n"


def write(records: list[dict], plan, out: Path = OUT) -> None:
    out.write_text(page(records, plan))
    print(f"wrote {out} from {len(records)} records")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from autofix.monitor.calibration import load_plan

    write(store.load(DATA), load_plan())


if __name__ == "__main__":
    main()
