"""SimCLR (Chen et al. 2020): two views, a projector, NT-Xent over the batch (optionally also against a
queue of earlier batches' embeddings, and with hard negatives weighted up), or NNCLR's nearest-neighbour
positives drawn from that queue."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..fields import bounded
from ..heads import HeadConfig
from ..losses import nearest_neighbour_positives, nt_xent
from .base import MethodOutput, TwoViewMethod


@dataclass
class SimCLRConfig:
    temperature: float = bounded(0.2, 1e-4, 100.0)
    hard_negative_beta: float = bounded(0.0, 0.0, 50.0)  # > 0: weight negatives by exp(beta * cosine)
    queue_size: int = bounded(0, 0)       # > 0: keep this many past projector outputs as extra negatives
    nn_positives: bool = False            # NNCLR: each view's nearest neighbour in the queue stands in for it
    easy_positive_drop: float = bounded(0.0, 0.0, 0.9)  # this share of the rows with the closest positives
                                          # left out of the loss (positive dropout)


class SimCLR(TwoViewMethod):
    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig, projector: HeadConfig, predictor: HeadConfig | None = None):
        super().__init__(backbone, projector)
        self.cfg = cfg
        if cfg.queue_size:
            # first-in first-out; `queue_filled` rows are real (a fresh queue holds nothing yet)
            self.register_buffer("queue", torch.zeros(cfg.queue_size, projector.out_dim))
            self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_next", torch.zeros((), dtype=torch.long))

    def forward(self, views, progress):
        (h1, h2), (z1, z2) = self.embed(views)
        queue = self.queue[: int(self.queue_filled)] if self.cfg.queue_size else None
        if self.cfg.nn_positives and queue is not None and len(queue):
            loss = nearest_neighbour_positives(z1, z2, queue, self.cfg.temperature)
        else:   # (NNCLR's first step, with nothing queued yet, is plain SimCLR)
            loss = nt_xent(z1, z2, self.cfg.temperature, self.cfg.hard_negative_beta, queue,
                           self.cfg.easy_positive_drop if self.training else 0.0)
        if self.cfg.queue_size and self.training:
            self._enqueue(torch.cat([z1, z2]).detach())
        return MethodOutput(loss, {"nt_xent": loss.detach()}, {"encoder": (h1, h2), "projector": (z1, z2)})

    @torch.no_grad()
    def _enqueue(self, z: torch.Tensor) -> None:
        size, start = self.cfg.queue_size, int(self.queue_next)   # one read of the counter per step
        z = z[-size:]
        self.queue[(start + torch.arange(len(z), device=z.device)) % size] = z.to(self.queue.dtype)
        self.queue_next.fill_((start + len(z)) % size)
        self.queue_filled.clamp_(max=size - len(z)).add_(len(z))
