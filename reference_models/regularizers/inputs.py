"""What a term reads in one training step (`TermInputs`), the helpers several families share, and
the ramp that scales each term's weight."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..methods.base import MethodOutput


@dataclass
class TermInputs:
    """One step's model, views and method output, with what the training forward recorded (a ViT's
    attention maps and tokens, the intermediate stages' pooled outputs) already taken off the backbone."""
    model: nn.Module
    views: list[torch.Tensor]
    out: MethodOutput
    step: int
    internals: list = field(default_factory=list)       # (attention maps per block, final tokens) per forward
    stage_outputs: list = field(default_factory=list)   # the stages' pooled outputs, one list per forward

    def branch(self, name: str, term: str) -> tuple[torch.Tensor, ...]:
        """The embeddings of every view on branch `name` (the encoder's for a method without a projector)."""
        embeddings = self.out.embeddings
        if name in embeddings:
            return embeddings[name]
        if "encoder" in embeddings:  # a method without a projector (MAE): fall back to the encoder
            return embeddings["encoder"]
        raise ValueError(f"regularizers.{term}.on={name}: this method exposes no {name} embeddings")

    def two_views(self, name: str, term: str) -> tuple[torch.Tensor, ...]:
        zs = self.branch(name, term)
        if len(zs) < 2:
            raise ValueError(f"regularizers.{term} acts on the two views of a joint-embedding method "
                             "(simclr, byol, vicreg)")
        return zs


def per_view(fn, zs) -> torch.Tensor:
    """The mean of `fn` over the views (or over the recorded forwards)."""
    return sum(fn(z) for z in zs) / len(zs)


def ramp(term, step: int) -> float:
    """The fraction of its weight a term has at `step`: rising linearly over `ramp_steps`, else 1."""
    return min(1.0, (step + 1) / term.ramp_steps) if term.ramp_steps else 1.0


def upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()   # bf16/fp16 under autocast
