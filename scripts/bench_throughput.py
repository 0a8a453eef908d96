"""Throughput of autofix's training loop against a minimal plain-PyTorch loop doing the same work.

Both loops train the same model (built by the same code, same batch, same on-device augmentation,
same optimizer); the plain loop has no logging, checkpoints, progress bar or hooks. Rounds alternate
between the two so background load hits both alike; the median over rounds is reported. The ratio
is what counts: absolute images/s on a shared machine mean little.

On CUDA it also runs ResNet-18 on CIFAR-sized input with AMP (bf16) and channels_last, against the
same plain loop, and fp32 against AMP. Results replace this device's section of docs/benchmarks.md.

    python scripts/bench_throughput.py                 # CPU: tiny convnet + ResNet-18 (few steps)
    python scripts/bench_throughput.py --quick         # fewer steps, for a smoke test
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from autofix.config.compose import compose
from autofix.config.convert import to_run_config
from autofix.monitor.health import build_monitor
from autofix.run.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

def make_trainer(method: str, overrides: list[str], workdir: Path, monitor: bool = False) -> Trainer:
    cfg = to_run_config(compose(method, ["tracking.enabled=false", "trainer.progress=false", "probe.at_start=false",
                                         "probe.linear=false", "trainer.ckpt_every=0", "data.n_train=1024",
                                         "data.n_val=512", f"trainer.out_dir={workdir}", *overrides]))
    trainer = Trainer(cfg, workdir, hooks=build_monitor(cfg.monitor) if monitor else ())
    for hook in trainer.hooks:
        hook.on_start(trainer)
    return trainer


def plain_loop(tr: Trainer, steps: int) -> float:
    """What a researcher writes by hand: sample, augment, forward, backward, step. Seconds taken."""
    model, opt, aug = tr.model, tr.optimizer, tr.augment
    x_all, b = tr.train_x, tr.cfg.trainer.batch_size
    dtype = tr.autocast_dtype
    ctx = torch.autocast(tr.device.type, dtype=dtype) if dtype else nullcontext()
    sync(tr.device)
    t0 = time.perf_counter()
    for i in range(steps):
        idx = torch.randint(len(x_all), (b,), device=tr.device)
        with torch.no_grad():
            x = x_all[idx].float().div_(255)
            views = [tr.normalize(aug(x)) for _ in range(model.n_views)]
        with ctx:
            out = model(views, i / steps)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        model.after_optimizer_step(i / steps)
    sync(tr.device)
    return time.perf_counter() - t0


def autofix_loop(tr: Trainer, steps: int) -> float:
    tr.cfg.trainer.max_steps = tr.step + steps
    sync(tr.device)
    t0 = time.perf_counter()
    tr.train_loop()
    sync(tr.device)
    return time.perf_counter() - t0


def timed(fn, device: torch.device) -> float:
    sync(device)
    tic = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - tic


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(label: str, method: str, overrides: list[str], target_steps: int, rounds: int, workdir: Path) -> dict:
    """Plain loop, autofix loop, and autofix loop with the health monitor, in alternating rounds of about
    `target_steps` steps (a whole number of the monitor's check periods, so checks are counted fairly).
    The monitor's kNN probe comes far more rarely (every 100-1000 steps): it is timed on its own, in the
    same rounds, and charged at its cadence; so is the probe buffer's embedding where a run does it at
    fewer checks than all (monitor.geometry_every, MAE). Overhead = (monitored time + those shares) /
    autofix time - 1. A check is also timed on its own (`measure`, outside the loop), with and without
    the embedding, to give its parts' cost in training steps."""
    tr = make_trainer(method, overrides, workdir / "bare")
    mon = make_trainer(method, overrides, workdir / "mon", monitor=True)
    hook = mon.hooks[0]
    every, knn_every, geo_every = hook.cfg.every, hook.cfg.knn_every, hook.cfg.geometry_every or hook.cfg.every
    hook.cfg.knn_every = 0       # the loop times the checks; the probe is timed below
    if geo_every != every:       # so is the embedding, where it comes at fewer checks than all
        hook.cfg.geometry_every = every * 10 ** 9
        hook.embed_last_check = False  # each round's end is not a run's end
    steps = every * max(1, round(target_steps / every))
    batch = tr.cfg.trainer.batch_size
    plain_loop(tr, 2)            # warm-up (allocator, kernels, cudnn autotune)
    autofix_loop(tr, 2)
    autofix_loop(mon, every - mon.step % every)  # align to a check boundary
    hook._knn(mon)
    plain_t, ours_t, mon_t, knn_t, check_t, light_t = [], [], [], [], [], []
    for r in range(rounds):
        # the order alternates, so that a loop is not always the one that runs after the other two
        loops = [(plain_t, plain_loop, tr), (ours_t, autofix_loop, tr), (mon_t, autofix_loop, mon)]
        for times, loop, trainer in (loops if r % 2 == 0 else loops[::-1]):
            times.append(loop(trainer, steps))
        knn_t.append(timed(lambda: hook._knn(mon), mon.device))
        check_t.append(timed(lambda: hook.measure(mon, geometry=True), mon.device))
        light_t.append(timed(lambda: hook.measure(mon, geometry=False), mon.device))
    plain_ips = steps * batch / statistics.median(plain_t)
    ours_ips = steps * batch / statistics.median(ours_t)
    step_t = sum(ours_t) / (steps * rounds)
    probe_share = statistics.median(knn_t) * steps / knn_every if knn_every else 0.0
    embed_t = max(0.0, statistics.median(check_t) - statistics.median(light_t))
    if geo_every != every:
        probe_share += embed_t * steps / geo_every
    # each round holds the same whole number of checks, and its monitored and bare loops run back to back:
    # the ratio within a round is free of the machine's drift over minutes, and the median over rounds
    # of a stray slow loop (the scatter of totals over whole runs was about 2 points)
    paired = sorted((m + probe_share) / o - 1.0 for m, o in zip(mon_t, ours_t))
    overhead = statistics.median(paired)
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
    mon_ips = steps * batch * rounds / (sum(mon_t) + rounds * probe_share)
    row = {"case": label, "method": method, "batch": batch, "steps": steps * rounds, "plain": plain_ips,
           "autofix": ours_ips, "ratio": ours_ips / plain_ips, "monitored": mon_ips, "monitor_overhead": overhead,
           "overhead_q1": q1, "overhead_q3": q3,
           "every": every, "knn_every": knn_every, "geo_every": geo_every,
           "check_steps": statistics.median(light_t) / step_t, "embed_steps": embed_t / step_t,
           "knn_steps": statistics.median(knn_t) / step_t}
    # the same overhead from its parts, free of the loop-to-loop noise (but without the per-step hook cost)
    row["parts_overhead"] = (row["check_steps"] / every + row["embed_steps"] / geo_every
                             + (row["knn_steps"] / knn_every if knn_every else 0.0))
    print(f"{label:40s} plain {plain_ips:9.1f}  autofix {ours_ips:9.1f} (ratio {row['ratio']:.3f})  "
          f"monitored {mon_ips:9.1f} (overhead {overhead:+.1%} [{q1:+.1%}, {q3:+.1%}]; a check {row['check_steps']:.2f} + {row['embed_steps']:.2f} steps, "
          f"a kNN probe {row['knn_steps']:.2f} steps; from the parts {row['parts_overhead']:+.1%}) img/s", flush=True)
    return row


def amp_speedup(method: str, overrides: list[str], steps: int, rounds: int, workdir: Path) -> dict:
    """fp32 vs bf16 autocast + channels_last on the same model, in the autofix loop."""
    fp32 = make_trainer(method, overrides + ["trainer.precision=fp32", "trainer.channels_last=false"], workdir / "a")
    amp = make_trainer(method, overrides + ["trainer.precision=bf16", "trainer.channels_last=true"], workdir / "b")
    autofix_loop(fp32, 2)
    autofix_loop(amp, 2)
    t32, tamp = [], []
    for _ in range(rounds):
        t32.append(autofix_loop(fp32, steps))
        tamp.append(autofix_loop(amp, steps))
    batch = fp32.cfg.trainer.batch_size
    ips32, ipsamp = steps * batch / statistics.median(t32), steps * batch / statistics.median(tamp)
    print(f"{method} resnet18 fp32 {ips32:.1f} img/s, bf16+channels_last {ipsamp:.1f} img/s", flush=True)
    return {"method": method, "batch": batch, "fp32": ips32, "amp": ipsamp, "speedup": ipsamp / ips32}


def write_section(path: Path, key: str, body: str) -> None:
    """Replace (or append) the block between <!-- bench:key --> markers, keeping other devices' results."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nGenerated by scripts in `scripts/`; each section is replaced when its script runs on that device.\n"
    block = f"<!-- bench:{key} -->\n{body.rstrip()}\n<!-- /bench:{key} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cases", nargs="+", default=["simclr", "byol", "vicreg", "mae", "resnet18"],
                    help="only these cases (methods; resnet18 is the CPU ResNet-18 case)")
    ap.add_argument("--override", nargs="*", default=[],
                    help="Hydra overrides for every case, e.g. monitor.every=40 (the section's header lists them)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    device = "cuda" if cuda else "cpu"
    rows, amp_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if cuda:
            steps, rounds = (100, 1) if args.quick else (100, 4)
            # the GPU recipes (conf/<method>_cifar10.yaml: their models, optimizers and monitor cadence) on
            # generated shapes, so no dataset download is needed; batch 256 for all four
            gpu = ["trainer.device=cuda", "data=shapes", "data.n_train=4096", "trainer.batch_size=256",
                   *args.override]
            for m in [m for m in ("simclr", "byol", "vicreg", "mae") if m in args.cases]:
                model = "vit_small" if m == "mae" else "resnet18 channels_last"
                rows.append(compare(f"{m}_cifar10 recipe: {model} b256 bf16", f"{m}_cifar10", gpu, steps, rounds,
                                    work / m))
            for m in [m for m in ("simclr",) if m in args.cases]:
                amp_rows.append(amp_speedup(m, [*gpu, "model=resnet18"], steps, rounds, work / "amp"))
        else:
            torch.set_num_threads(min(2, torch.get_num_threads()))
            # many short alternating rounds: the machine's speed drifts over minutes, and a round as long
            # as one check period pairs each monitored round with bare rounds timed just before it
            steps, rounds = (20, 1) if args.quick else (20, 12)
            cpu = ["trainer.device=cpu", *args.override]
            for m in [m for m in ("simclr", "byol", "vicreg", "mae") if m in args.cases]:
                # an MAE step costs a third of the others': time it over 2.5x the steps, for as many seconds
                rows.append(compare(f"{m} {'vit_tiny' if m == 'mae' else 'tiny_convnet'} b128", m,
                                    cpu + ["trainer.batch_size=128"], steps * 5 // 2 if m == "mae" else steps,
                                    rounds, work / m))
            if "resnet18" in args.cases:
                rows.append(compare("simclr resnet18 b16", "simclr", cpu + ["model=resnet18", "trainer.batch_size=16"],
                                    20, 1, work / "rs"))
    name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [f"## Training-loop throughput on {name}", "",
             f"`python scripts/bench_throughput.py{' --quick' if args.quick else ''}`, {dt.date.today().isoformat()}, "
             f"torch {torch.__version__}. Plain = a minimal hand-written PyTorch loop doing the same work (same model, "
             "batch, augmentation, optimizer); ratio = autofix / plain images per second (1.00 = no overhead; "
             "medians over alternating rounds, so machine noise of a few percent either way remains). "
             "Monitor overhead: per round, the monitored loop (checks at the run's own cadence, every N steps) plus "
             "the monitor's kNN probe, timed apart in the same rounds and charged once per `kNN every` steps (and "
             "likewise the probe buffer's embedding where it is done at fewer checks than all, "
             "`monitor.geometry_every`), over the autofix loop's time in the same round, minus 1; the median "
             "over rounds, with the interquartile range in brackets. The parts are also timed on "
             "their own, in training steps: a check without the embedding, the embedding (geometry, "
             "activations, BatchNorm) and a kNN probe; 'from the parts' = check / every + embedding / embed "
             "every + probe / kNN every, the same overhead without the loop-to-loop noise of a few percent "
             "(but without the hook's small per-step cost)."
             + (f" Overrides: `{' '.join(args.override)}`." if args.override else ""), "",
             "| case | batch | steps timed | plain img/s | autofix img/s | ratio | check every | embed every | "
             "kNN every | a check (steps) | its embedding (steps) | a kNN probe (steps) | monitor overhead | "
             "from the parts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['batch']} | {r['steps']} | {r['plain']:.1f} | {r['autofix']:.1f} | "
                     f"{r['ratio']:.3f} | {r['every']} | {r['geo_every']} | {r['knn_every']} | "
                     f"{r['check_steps']:.2f} | {r['embed_steps']:.2f} | {r['knn_steps']:.2f} | {r['monitor_overhead']:+.1%} [{r['overhead_q1']:+.1%}, {r['overhead_q3']:+.1%}] | "
                     f"{r['parts_overhead']:+.1%} |")
    if amp_rows:
        lines += ["", "AMP: bf16 autocast + channels_last against fp32, same model and loop.", "",
                  "| method | batch | fp32 img/s | bf16+channels_last img/s | speed-up |", "|---|---:|---:|---:|---:|"]
        for r in amp_rows:
            lines.append(f"| {r['method']} resnet18 | {r['batch']} | {r['fp32']:.1f} | {r['amp']:.1f} | "
                         f"{r['speedup']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_section(out, f"throughput-{device}", "\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
