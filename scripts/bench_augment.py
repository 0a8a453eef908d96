"""Time BatchAugment's SimCLR-style pipeline against kornia.augmentation's equivalent.

Usage: python scripts/bench_augment.py [--batch 256] [--size 32] [--threads 2] [--repeats 10]
Prints a markdown table; the ratio column is kornia time / ours (higher = we are faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reference_models.augment import AugmentConfig, BatchAugment, identity_config


def time_interleaved(fns: dict, repeats: int, warmup: int = 3) -> dict[str, tuple[float, float]]:
    """Median and min ms per function. Calls alternate so background load hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    # Median is the headline; min is the floor on a shared, noisy box.
    return {k: (statistics.median(v), min(v)) for k, v in samples.items()}


def kornia_pipeline(size: int):
    import kornia.augmentation as K

    return torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.2),  # fixed threshold 0.5
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)

    simclr = AugmentConfig(
        crop_scale=(0.2, 1.0), flip_p=0.5, jitter_p=0.8, gray_p=0.2, blur_p=0.5, blur_kernel=3, solarize_p=0.2
    )
    ours = BatchAugment(simclr)
    ident = BatchAugment(identity_config())
    fns = {
        "BatchAugment (SimCLR: crop 0.2-1, flip, jitter 0.8, gray 0.2, blur 0.5, solarize 0.2)": lambda: ours(x, g),
        "BatchAugment identity_config": lambda: ident(x, g),
    }
    try:
        kpipe = kornia_pipeline(args.size)
        fns["kornia.augmentation equivalent"] = lambda: kpipe(x)
    except ImportError:
        print("kornia not installed; timing ours only")
    with torch.no_grad():
        res = time_interleaved(fns, args.repeats)

    shape = f"{args.batch}x3x{args.size}x{args.size}"

    print(f"batch {shape}, torch {torch.__version__}, threads {args.threads}, {args.repeats} repeats after warm-up\n")
    print("| pipeline | median ms | min ms |")
    print("|---|---:|---:|")
    for name, (med, mn) in res.items():
        print(f"| {name} | {med:.2f} | {mn:.2f} |")
    names = list(res)
    if len(names) == 3:
        (o_med, o_min), (k_med, k_min) = res[names[0]], res[names[2]]
        print(f"\nratio kornia / ours: {k_med / o_med:.1f}x (median), {k_min / o_min:.1f}x (min)")


if __name__ == "__main__":
    main()
