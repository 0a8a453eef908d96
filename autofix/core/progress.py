"""Terminal output of a run: a progress bar (step, loss, throughput, time left) and the closing summary."""
from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console(highlight=False)


class TrainProgress:
    """A live rich bar on a terminal; on a pipe or in CI, a plain line about every tenth of the run."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, label: str = "train"):
        self.total, self.enabled = total, enabled
        self.live = enabled and console.is_terminal
        self.every = max(total // 10, 1)
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[ips]} img/s"),
                             TimeRemainingColumn(), console=console, disable=not self.live)
        self._task = self._bar.add_task(label, total=total, completed=start, loss="-", ips="-")

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)

    def update(self, step: int, loss: float | None = None, ips: float | None = None) -> None:
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if ips is not None:
            fields["ips"] = f"{ips:,.0f}"
        self._bar.update(self._task, completed=step, **fields)
        if self.enabled and not self.live and loss is not None and (step % self.every == 0 or step == self.total):
            console.print(f"step {step}/{self.total}  loss {loss:.4f}  {ips or 0:,.0f} img/s")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def print_summary(summary: dict) -> None:
    table = Table(title=f"autofix run: {summary['name']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k in ("method", "data", "steps"):
        table.add_row(k, str(summary[k]))
    table.add_row("wall time", f"{summary['wall_s']:.1f} s")
    for k, v in summary["loss_terms"].items():
        table.add_row(f"loss/{k}", _fmt(v))
    knn = _fmt(summary["knn"])
    if summary.get("knn_init") is not None:
        knn += f"  (random init {_fmt(summary['knn_init'])})"
    table.add_row("kNN accuracy", knn)
    if summary.get("linear") is not None:
        table.add_row("linear probe", _fmt(summary["linear"]))
    table.add_row("checkpoints", str(summary["checkpoints"]))
    table.add_row("MLflow", summary["mlflow"])
    console.print(table)
