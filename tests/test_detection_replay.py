"""The committed detection records (docs/data/detection.json.gz, scripts/fault_bench.py) re-judged by today's
detectors: a threshold change that raises an alarm on a recorded healthy run, or loses a recorded fault's
detection, fails here, so it cannot silently undo the calibration."""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import pytest

from autofix.config.compose import compose
from autofix.config.convert import to_run_config
from autofix.monitor.calibration import detector_set_hash, detectors_for, load_plan, replay

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "data" / "detection.json.gz"


@lru_cache(maxsize=None)
def _records() -> tuple[dict, ...]:
    if not RECORDS.is_file():
        return ()
    return tuple(r for r in json.loads(gzip.decompress(RECORDS.read_bytes())) if not r.get("error"))


@lru_cache(maxsize=None)
def _monitor(method: str):
    return to_run_config(compose(method, [])).monitor


def _today(r: dict) -> list[dict]:
    return replay(r["checks"], r["max_steps"], detectors_for(_monitor(r["method"]), r["method"], r["backbone"]))


def _need(rs: list[dict], what: str) -> list[dict]:
    if not rs:
        pytest.skip(f"no {what} recorded in {RECORDS.name} yet (python scripts/fault_bench.py --train)")
    return rs


def test_replay_reproduces_the_events_of_runs_made_with_todays_detectors():
    """Replaying a run's checks gives what the live monitor raised, where the thresholds have not moved since."""
    today = detector_set_hash(_monitor("vicreg"))
    same = _need([r for r in _records() if r["detectors"] == today], "runs at today's detector set")
    for r in same:
        got = [(e["id"], e["detector"], e["step"], e["onset"]) for e in _today(r)]
        live = [(e["id"], e["detector"], e["step"], e["onset"]) for e in r["events"]]
        assert sorted(got) == sorted(live), (r["method"], r["fault"], r["seed"])


def test_no_held_out_healthy_run_raises_an_alarm_today():
    """The held-out healthy set (the plan's): thresholds are set on calibration runs, where an alarm is what
    the next threshold change has to answer; on a held-out run it is a false alarm of today's detectors."""
    healthy = _need([r for r in _records() if not r["fault"] and r["role"] == "held_out"], "held-out healthy runs")
    alarms = [f"{r['method']} {r['variant'] or 'default'} seed {r['seed']} ({r['role']}): "
              + ", ".join(f"{e['detector']}@{e['step']}" for e in ev)
              for r in healthy if (ev := _today(r))]
    assert not alarms, alarms


def test_no_recorded_fault_detection_is_lost_today():
    faults = _need([r for r in _records() if r["fault"]], "fault runs")
    lost = []
    for r in faults:
        was = {e["id"] for e in r["events"]} & set(r["expects"])
        now = {e["id"] for e in _today(r)}
        lost += [f"{r['fault']} seed {r['seed']}: {s}" for s in sorted(was - now)]
    assert not lost, lost


def test_every_record_has_its_seeds_role_from_the_plan():
    plan = load_plan()
    rs = _need(list(_records()), "runs")
    assert all(r["role"] == plan.role(r["seed"]) for r in rs)
