"""Layer-wise health: the backbone's intermediate stages, pooled, on the images the kNN probe already
embeds (no extra forward). The catalog's layer entries ask whether blocks compute anything (adjacent
stages that are one representation: bypassed or redundant layers) and whether the last stage keeps what
an earlier one knew (a penultimate stage that classifies better than the output)."""
from __future__ import annotations

import torch
from torch import nn

from .geometry import linear_cka
from .probes import knn_accuracy

NAN = float("nan")


def pool(out: torch.Tensor) -> torch.Tensor:
    """A stage's output as one vector per image: spatial mean of a feature map, token mean of a ViT's."""
    return out.mean(dim=(2, 3)) if out.dim() == 4 else out.mean(dim=1) if out.dim() == 3 else out


class StageRecorder:
    """While open, keeps the pooled output of every stage in `backbone.feature_stages()` of each forward;
    `features()` joins them per stage over the forwards, in call order."""

    def __init__(self, backbone: nn.Module):
        self.modules = list(backbone.feature_stages()) if hasattr(backbone, "feature_stages") else []
        self.kept: list[list[torch.Tensor]] = [[] for _ in self.modules]
        self.handles = []

    def __enter__(self) -> "StageRecorder":
        for i, m in enumerate(self.modules):
            self.handles.append(m.register_forward_hook(
                lambda mod, args, out, i=i: self.kept[i].append(pool(out).detach().float())))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def features(self) -> list[torch.Tensor]:
        return [torch.cat(k) for k in self.kept if k]


def adjacent_cka(features: list[torch.Tensor]) -> list[float]:
    """Linear CKA between each stage and the next: near 1 when a stage passes its input on unchanged."""
    return [linear_cka(a, b) for a, b in zip(features, features[1:])]


def stage_knn(features: list[torch.Tensor], n_bank: int, bank_y: torch.Tensor, query_y: torch.Tensor,
              k: int, temperature: float, num_classes: int) -> list[float]:
    """kNN accuracy of each stage's pooled features: rows [:n_bank] are the bank, the rest the queries."""
    return [knn_accuracy(f[:n_bank], bank_y, f[n_bank:], query_y, k, temperature, num_classes)
            for f in features]


def stage_metrics(features: list[torch.Tensor], knn: list[float], knn_init: list[float] | None) -> dict[str, float]:
    """The detectors' numbers from the stages' features and probe accuracies (input first, last = output).
    - adjacent_cka_max: the most alike pair of neighbouring stages (a block that computes ~nothing);
    - knn_best_inner_gain: the best inner stage's kNN minus the output's (> 0: the output lost something);
    - knn_first_gain: the first stage's kNN against its own at the start (< 0: early layers lost power)."""
    m: dict[str, float] = {}
    if len(features) >= 2:
        cka = [c for c in adjacent_cka(features) if c == c]
        m["stages/adjacent_cka_max"] = max(cka) if cka else NAN
        m["stages/adjacent_cka_mean"] = sum(cka) / len(cka) if cka else NAN
    if len(knn) >= 2:
        m["stages/knn_best_inner_gain"] = max(knn[:-1]) - knn[-1]
        m["stages/knn_first"] = knn[0]
        if knn_init and len(knn_init) == len(knn):
            m["stages/knn_first_gain"] = knn[0] - knn_init[0]
    return m
