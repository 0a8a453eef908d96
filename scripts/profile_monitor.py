"""Where a health-monitor check spends its time: each part timed on its own, in milliseconds and in
training steps of the same run, plus a torch.profiler table of one whole check. A diagnostic (prints
only): docs/benchmarks.md holds the overhead the monitor adds at its cadence (scripts/bench_throughput.py).

    python scripts/profile_monitor.py simclr mae            # CPU: the digits experiments
    python scripts/profile_monitor.py simclr --gpu          # CUDA: the GPU recipes (conf/simclr_cifar10.yaml)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_throughput import autofix_loop, make_trainer, sync

from autofix.monitor import geometry, optimization
from autofix.monitor.buffer import embed as _embed
from autofix.monitor.embedding_signals import branch_geometry as _geometry
from reference_models.methods.mae import MAE

ROOT = Path(__file__).resolve().parents[1]

def profile(experiment: str, overrides: list[str], workdir: Path, table: bool) -> None:
    tr = make_trainer(experiment, overrides, workdir, monitor=True)
    mon, model = tr.hooks[0], tr.model
    mon.cfg.knn_every = 0
    autofix_loop(tr, mon.cfg.every)
    tic = time.perf_counter()
    autofix_loop(tr, 19)
    sync(tr.device)
    step = (time.perf_counter() - tic) / 19
    print(f"== {experiment}: a training step {step * 1000:.1f} ms, a check every {mon.cfg.every} steps")

    def timeit(name: str, fn, n: int = 3) -> None:
        fn()
        sync(tr.device)
        tic = time.perf_counter()
        for _ in range(n):
            fn()
        sync(tr.device)
        ms = (time.perf_counter() - tic) / n * 1000
        print(f"  {name:30s} {ms:8.2f} ms {ms / 1000 / step:7.3f} steps")

    out, _ = tr.train_step()     # the hook's per-step cost (every step, not only at checks)
    timeit("after_step, between checks", lambda: mon.after_step(tr, out), n=200)
    v1, v2 = mon.buffer.views
    timeit("kNN probe (monitor's)", lambda: mon._knn(tr))
    timeit("a check with embeddings", lambda: mon.measure(tr, geometry=True))
    timeit("a check without them", lambda: mon.measure(tr, geometry=False))
    model.eval()
    timeit("embed one probe view", lambda: _embed(model, v1))
    h1, z1 = _embed(model, v1)
    h2, z2 = _embed(model, v2)
    for name, a, b in (("encoder", h1, h2), ("projector", z1, z2)):
        if a is None:
            continue
        a, b = a.cpu(), b.cpu()
        timeit(f"geometry {name} {tuple(a.shape)}", lambda: _geometry("x", a, b))
        timeit("  effective rank", lambda: geometry.effective_rank(a))
        timeit("  spectrum", lambda: geometry.spectrum(a))
        timeit("  correlation", lambda: geometry.correlation_stats(a))
    weights = list(model.backbone.parameters())
    timeit("gradient norms", lambda: optimization.grad_norms(model.backbone.named_parameters()))
    timeit("update ratio", lambda: optimization.update_ratio(mon.previous, weights))
    timeit("non-finite count", lambda: optimization.count_nonfinite(weights))
    timeit("method metrics (embeddings)", lambda: mon._method_metrics(model, tr, v1, z1, z2))
    if isinstance(model, MAE):
        timeit("MAE reconstruction metrics", lambda: mon._mae_metrics(model, tr))
    model.train()
    if table:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if tr.device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            mon.measure(tr)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=36))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("methods", nargs="+", choices=["simclr", "byol", "vicreg", "mae"])
    ap.add_argument("--gpu", action="store_true", help="the GPU recipes on CUDA, on generated shapes")
    ap.add_argument("--table", action="store_true", help="also a torch.profiler table of one check")
    args = ap.parse_args()
    for m in args.methods:
        if args.gpu:
            exp, over = f"{m}_cifar10", ["trainer.device=cuda", "data=shapes", "data.n_train=4096",
                                         "trainer.batch_size=256"]
        else:
            torch.set_num_threads(min(2, torch.get_num_threads()))
            exp, over = m, ["trainer.device=cpu", "trainer.batch_size=128"]
        profile(exp, over, Path(f"/tmp/profile_monitor_{m}"), args.table)


if __name__ == "__main__":
    main()
