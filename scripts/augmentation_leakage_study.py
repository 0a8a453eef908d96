"""Does the encoder keep the augmentation in its features? A measurement for the catalog's augmentation-
leakage entries (64, 266, 280, 335, 502, ...), tried as a detector and not adopted (docs/detection_notes.md).

For each run (healthy runs of the four methods on digits and shapes, and SimCLR with two faults that leave
the encoder sensitive to an augmentation), 256 held-out images are embedded before training and after it,
as they are and under fixed transformations. Three kinds of number:
  - share: the part of the (l2-normalised) embeddings' variance that the transformation's identity
    explains (between-group over total), for four harsh transformations (darkened to half, a 3x3 box
    blur, a centre zoom to 60%, grey) and the images as they are;
  - displacement: mean squared distance between an image's embedding and its transformed twin's, over the
    mean squared distance between two different images' embeddings (the probe's spread);
  - grouping by transformation: for transformations inside the training augmentation's range (brightness
    x0.7, a centre crop of half the area, a horizontal flip, and the images as they are; not grey, which
    leaves digits as they are), the share of embedded (image, transformation) points whose nearest
    neighbour is another image under the same transformation ("clusters by augmentation type, not
    content"; chance about 0.25), and the share whose nearest neighbour is the same image under another.

    python scripts/augmentation_leakage_study.py --workers 2 --out docs/augmentation_leakage.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("simclr", "digits", None), ("simclr", "shapes", None), ("byol", "digits", None), ("byol", "shapes", None),
        ("vicreg", "digits", None), ("vicreg", "shapes", None), ("mae", "digits", None), ("mae", "shapes", None),
        ("simclr", "digits", "no_augmentation"), ("simclr", "shapes", "no_augmentation"),
        ("simclr", "digits", "colour_shortcut"), ("simclr", "shapes", "colour_shortcut")]
TRANSFORMS = ("dark", "blur", "zoom", "gray")
IN_RANGE = ("id", "bright", "crop", "flip")


def measure(conf: str, data: str, fault: str | None, out_dir: str) -> dict:
    """Train one run in this process and return the measures before and after."""
    import torch
    import torch.nn.functional as F

    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config
    from autofix.run.trainer import Trainer

    torch.set_num_threads(1)
    overrides = ["remediation=off", "tracking.enabled=false", "trainer.progress=false", f"data={data}",
                 f"trainer.out_dir={out_dir}"] + ([f"fault={fault}"] if fault else [])
    trainer = Trainer(to_run_config(compose(conf, overrides)), out_dir)
    x = trainer.data.val_x[:256].float().div(255).to(trainer.device)

    def zoom(images, side=0.6):
        h = images.shape[-1]
        c = int(round(h * side))
        o = (h - c) // 2
        return F.interpolate(images[..., o:o + c, o:o + c], size=h, mode="bilinear", align_corners=False)

    fns = {"id": lambda im: im, "dark": lambda im: im * 0.5,
           "blur": lambda im: F.avg_pool2d(im, 3, 1, 1, count_include_pad=False), "zoom": zoom,
           "gray": lambda im: im.mean(1, keepdim=True).expand_as(im), "bright": lambda im: im * 0.7,
           "crop": lambda im: zoom(im, 0.5 ** 0.5), "flip": lambda im: im.flip(-1)}

    @torch.no_grad()
    def measures() -> dict:
        model = trainer.model.eval()
        emb = {k: F.normalize(model.encode(trainer.normalize(f(x))).float(), dim=1) for k, f in fns.items()}
        trainer.model.train()
        every = torch.cat(list(emb.values()))
        mean = every.mean(0)
        total = (every - mean).pow(2).sum(1).mean()
        between = sum((e.mean(0) - mean).pow(2).sum() for e in emb.values()) / len(emb)
        n = x.shape[0]
        spread = (emb["id"][:, None] - emb["id"][None]).pow(2).sum(-1).sum() / (n * (n - 1))
        out = {"share": float(between / total)}
        for k in TRANSFORMS:
            out[k] = float((emb[k] - emb["id"]).pow(2).sum(1).mean() / spread)
        points = torch.cat([emb[k] for k in IN_RANGE])
        image = torch.arange(n).repeat(len(IN_RANGE))
        transform = torch.arange(len(IN_RANGE)).repeat_interleave(n)
        sim = points @ points.T
        sim.fill_diagonal_(-float("inf"))
        nearest = sim.argmax(1)
        out["by_transform"] = float(((transform[nearest] == transform) & (image[nearest] != image)).float().mean())
        out["by_content"] = float((image[nearest] == image).float().mean())
        return out

    before = measures()
    trainer.fit()
    return {"conf": conf, "data": data, "fault": fault or "", "init": before, "final": measures()}


def table(rows: list[dict]) -> str:
    head = ("| run | share: init -> end | " + " | ".join(f"{t}: init -> end" for t in TRANSFORMS)
            + " | NN by transformation | NN by content |\n" + "|---|---|" + "---|" * (len(TRANSFORMS) + 2) + "\n")
    lines = []
    for r in rows:
        name = f"{r['conf']} {r['data']}" + (f" `{r['fault']}`" if r["fault"] else "")
        cells = [f"{r['init'][k]:.2f} -> {r['final'][k]:.2f}" for k in ("share", *TRANSFORMS, "by_transform", "by_content")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "augmentation_leakage.md"))
    ap.add_argument("--work", default="/tmp/augmentation_leakage")
    ap.add_argument("--one", nargs=3, metavar=("CONF", "DATA", "FAULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # a worker: one run, its record on stdout
        conf, data, fault = args.one
        print(json.dumps(measure(conf, data, None if fault == "-" else fault, f"{args.work}/{conf}_{data}_{fault}")))
        return 0

    def run(spec):
        conf, data, fault = spec
        done = subprocess.run([sys.executable, __file__, "--work", args.work, "--one", conf, data, fault or "-"],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run, RUNS))
    Path(args.out).write_text(
        "# Augmentation leakage: measured, not adopted as a detector\n\n"
        "Generated by `python scripts/augmentation_leakage_study.py` (seed 0, each run at its default length).\n"
        "share: the part of the embeddings' variance the transformation's identity explains (five groups:\n"
        "the images as they are, darkened to half, box-blurred, zoomed to the centre 60%, grey). The other\n"
        "columns: mean squared distance between an image's embedding and its transformed twin's, over the\n"
        "mean squared distance between two images' embeddings. NN by transformation / by content: for the\n"
        "images as they are, at brightness x0.7, centre-cropped to half the area and flipped, the share of\n"
        "points whose nearest neighbour is another image under the same transformation (chance about 0.25) /\n"
        "the same image under another one. Why no threshold was set: `docs/detection_notes.md`.\n\n" + table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
