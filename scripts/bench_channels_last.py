"""channels_last against the default (contiguous) memory format on the CPU, in autofix's own training loop.

PyTorch's oneDNN convolutions on x86 work in channels_last; a contiguous (NCHW) tensor is reordered on
the way in and out of every convolution. This script measures what that costs the CPU recipes, on one
thread (as a remediation child runs) and on two (as a parent runs on this machine), so that the CPU
default (`conf/trainer/cpu.yaml`) rests on a number. Rounds alternate between the two formats and the
ratio is taken within each round (the machine's speed drifts over minutes); the median over rounds is
reported. Results replace the `channels-last-cpu` section of docs/benchmarks.md.

    python scripts/bench_channels_last.py            # 4 rounds of 10 steps per case (about 7 min)
    python scripts/bench_channels_last.py --quick    # 2 rounds, a smoke test
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from bench_throughput import autofix_loop, make_trainer, write_section

ROOT = Path(__file__).resolve().parents[1]

def compare(method: str, threads: int, steps: int, rounds: int, workdir: Path) -> dict:
    torch.set_num_threads(threads)
    common = ["trainer.device=cpu", "trainer.batch_size=128"]
    nchw = make_trainer(method, common + ["trainer.channels_last=false"], workdir / f"{method}{threads}a")
    nhwc = make_trainer(method, common + ["trainer.channels_last=true"], workdir / f"{method}{threads}b")
    autofix_loop(nchw, 2)  # warm-up: allocator, oneDNN primitive caches
    autofix_loop(nhwc, 2)
    ratios, t_nchw, t_nhwc = [], [], []
    for r in range(rounds):
        pair = [(t_nchw, nchw), (t_nhwc, nhwc)]
        for times, tr in (pair if r % 2 == 0 else pair[::-1]):
            times.append(autofix_loop(tr, steps))
        ratios.append(t_nchw[-1] / t_nhwc[-1])
    batch = 128
    row = {"method": method, "model": nchw.cfg.model.backbone, "threads": threads, "steps": steps * rounds,
           "nchw": steps * batch / statistics.median(t_nchw), "nhwc": steps * batch / statistics.median(t_nhwc),
           "speedup": statistics.median(ratios),
           "range": (min(ratios), max(ratios))}
    print(f"{method:7s} {row['model']:13s} {threads} thread(s): contiguous {row['nchw']:7.1f} img/s, channels_last "
          f"{row['nhwc']:7.1f} img/s, speed-up {row['speedup']:.2f}x [{row['range'][0]:.2f}, {row['range'][1]:.2f}]",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds (smoke test)")
    ap.add_argument("--methods", nargs="+", default=["simclr", "byol", "vicreg", "mae"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    steps, rounds = (5, 2) if args.quick else (10, 4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            for m in args.methods:
                rows.append(compare(m, threads, steps, rounds, Path(tmp)))
    lines = [f"## channels_last on CPU ({platform.machine()})", "",
             f"`python scripts/bench_channels_last.py{' --quick' if args.quick else ''}`, "
             f"{dt.date.today().isoformat()}, torch {torch.__version__}. The autofix loop (no monitor), batch 128, "
             "the CPU recipes' models, contiguous (NCHW) against channels_last memory format; speed-up = "
             "contiguous time / channels_last time, the median over alternating rounds, with the lowest and "
             "highest round in brackets. One thread is how a remediation child runs, two how a parent runs here. "
             "MAE's ViT sees a 4-d tensor only at its patch embedding: it is the control row.", "",
             "| method | model | threads | steps timed | contiguous img/s | channels_last img/s | speed-up |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['model']} | {r['threads']} | {r['steps']} | {r['nchw']:.1f} | "
                     f"{r['nhwc']:.1f} | {r['speedup']:.2f}x [{r['range'][0]:.2f}, {r['range'][1]:.2f}] |")
    write_section(Path(args.out), "channels-last-cpu", "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
