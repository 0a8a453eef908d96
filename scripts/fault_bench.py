"""Train healthy runs and induced faults with the health monitor, and record every check, for detection's
calibration and its held-out verdict (the seed plan: conf/monitor/_calibration.yaml).

    python scripts/fault_bench.py --train --held-out             # the plan's held-out set (resumable)
    python scripts/fault_bench.py --train --seeds 0 1            # calibration seeds: healthy defaults + faults
    python scripts/fault_bench.py --train --seeds 0 --faults dead_relu --no-healthy
    python scripts/fault_bench.py                                # docs/detection.md from the records alone

`--train` appends one record per run to docs/data/detection.json.gz (saved after each run: a stopped bench
picks up where it left off; a run already recorded is not run again). A record keeps every monitor check's
metrics, so `scripts/detection_table.py` (called at the end) re-judges them with today's thresholds
without training. Runs go to a pool of worker processes, one torch thread each.
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import records as store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "detection.json.gz"
CHECK_KEYS = ("health/", "grad/", "weights/", "act/", "bn/")   # a row with one of these is a monitor check


def key(r: dict) -> tuple:
    return r["method"], r["data"], r["seed"], r["fault"] or "", r["variant"] or ""


def run_one(job: dict) -> dict:
    """One run; a run that fails is a record saying why, not the end of the whole bench."""
    try:
        return _run_one(job)
    except Exception as e:  # noqa: BLE001 - any failure of one run is reported in its record
        return {**job, "error": f"{type(e).__name__}: {e}", "expects": [], "steps": 0, "max_steps": 1,
                "knn": float("nan"), "knn_init": float("nan"), "events": [], "checks": []}


def _run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config
    from autofix.monitor.calibration import detector_set_hash, detectors_for, replay
    from autofix.monitor.health import build_monitor
    from autofix.run.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        overrides = [f"data={job['data']}", f"trainer.seed={job['seed']}", "tracking.enabled=false",
                     "trainer.progress=false", "probe.linear=false", "trainer.ckpt_every=0", f"trainer.out_dir={out}",
                     *([f"fault={job['fault']}"] if job["fault"] else []), *job["overrides"]]
        cfg = to_run_config(compose(job["method"], overrides))
        hooks = build_monitor(cfg.monitor)
        started = time.perf_counter()
        trainer = Trainer(cfg, out, hooks=hooks)
        summary = trainer.fit()
        wall = time.perf_counter() - started
    events = [asdict(e) for e in hooks[0].events] if hooks else []
    # every key of a check's row: the detectors read loss/, stages/, attn/, byol/, ... as well
    checks = [dict(r) for r in trainer.history if any(k.startswith(CHECK_KEYS) for k in r)]
    replayed = replay(checks, cfg.trainer.max_steps, detectors_for(cfg.monitor, cfg.method.name, cfg.model.backbone))
    if [(e["detector"], e["step"]) for e in replayed] != [(e["detector"], e["step"]) for e in events]:
        raise RuntimeError("the recorded checks do not reproduce the run's events: a record would mislead its replay")
    return {**job, "backbone": cfg.model.backbone, "expects": list(cfg.fault.expects), "steps": summary["steps"],
            "max_steps": cfg.trainer.max_steps, "knn": summary["knn"], "knn_init": summary["knn_init"],
            "events": events, "checks": checks, "detectors": detector_set_hash(cfg.monitor),
            "wall_s": round(wall, 1), "commit": store.commit(), "torch": torch.__version__,
            "machine": platform.machine(), "date": dt.date.today().isoformat()}


def resolve(overrides: list[str], method: str) -> list[str]:
    """A variant's `key*factor` becomes `key=<the method's default x factor>` (width x2 for every backbone)."""
    out = []
    for o in overrides:
        if "*" in o and "=" not in o:
            from autofix.config.compose import compose

            name, factor = o.split("*")
            node = compose(method, [])
            for part in name.split("."):
                node = node[part]
            o = f"{name}={type(node)(node * float(factor))}"
        out.append(o)
    return out


def jobs_for(args, plan) -> list[dict]:
    import yaml

    from autofix.config.compose import compose

    faults = {p.stem: yaml.safe_load(p.read_text()).get("fault", {}) for p in sorted((ROOT / "conf" / "fault").glob("*.yaml"))
              if p.stem != "none" and (not args.faults or p.stem in args.faults)}
    healthy = []
    if args.held_out:
        seeds = list(plan.held_out)
        for i, seed in enumerate(seeds):
            variants = {"": []} | (plan.variants if i < plan.variant_seeds else {})
            healthy += [(m, seed, v, ov) for v, ov in variants.items() for m in args.methods]
        fault_seeds = seeds[:plan.fault_seeds]
    else:
        healthy = [(m, s, "", []) for s in args.seeds for m in args.methods]
        fault_seeds = args.seeds
    own = {m: compose(m, []).data.name for m in {*args.methods, *(m for f in faults.values() for m in f.get("methods", []))}}
    base = {"threads": args.threads}
    jobs = []
    if args.healthy:
        for method, seed, variant, overrides in healthy:
            ov = resolve(overrides, method) + list(args.overrides)
            data = next((o.split("=", 1)[1] for o in ov if o.startswith("data=")), args.data or own[method])
            if any(o.startswith("data=") for o in ov) and data == own[method]:   # a second dataset that is its first
                data = plan.second_data_for.get(data, data)
            jobs.append({**base, "method": method, "data": data, "seed": seed, "fault": None, "variant": variant or None,
                         "overrides": [o for o in ov if not o.startswith("data=")], "role": plan.role(seed)})
    for seed in fault_seeds if args.with_faults else []:
        for name, fault in faults.items():
            for method in fault.get("methods") or ["vicreg"]:
                jobs.append({**base, "method": method, "data": args.data or own[method], "seed": seed, "fault": name, "variant": None,
                             "overrides": list(args.overrides), "role": plan.role(seed)})
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="run what is not recorded yet, then write the page")
    ap.add_argument("--held-out", action="store_true", help="the plan's held-out seeds, variants and fault seeds")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--methods", nargs="+", default=["simclr", "byol", "vicreg", "mae"])
    ap.add_argument("--data", default=None, help="the data every run trains on (default: each method's own)")
    ap.add_argument("--faults", nargs="*", default=None, help="only these faults")
    ap.add_argument("--no-healthy", dest="healthy", action="store_false", help="faults only")
    ap.add_argument("--no-faults", dest="with_faults", action="store_false", help="healthy runs only")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--records", type=Path, default=DATA, help="the record file (a smoke test's own, say)")
    ap.add_argument("--page", type=Path, default=None, help="where the page goes (default docs/detection.md)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run (part of no key: use with care)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from autofix.monitor.calibration import load_plan

    plan = load_plan()
    records = store.load(args.records)
    if args.train:
        done = {key(r) for r in records if not r.get("error")}
        jobs = [j for j in jobs_for(args, plan) if key(j) not in done]
        print(f"{len(jobs)} runs to make on {args.workers} workers ({len(records)} recorded)", flush=True)
        records = [r for r in records if key(r) not in {key(j) for j in jobs}]   # a failed run is retried
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for r in pool.imap_unordered(run_one, jobs):
                records.append(r)
                store.save(args.records, records)
                fired = r.get("error") or ", ".join(f"{e['id']}@{e['step']}" for e in r["events"]) or "none"
                print(f"{r['fault'] or 'healthy':24s} {r['variant'] or '':12s} {r['method']:7s} {r['data']:7s} "
                      f"seed {r['seed']} ({r['role']}): {fired}", flush=True)
    import detection_table

    detection_table.write(records, plan, *([args.page] if args.page else []))


if __name__ == "__main__":
    main()
