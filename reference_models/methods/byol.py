"""BYOL (Grill et al. 2020): an online network with a predictor regresses a momentum (EMA) target.

tau_base = 0 means no momentum target: the target branch is the online network itself, detached
when stop_grad is on (SimSiam-like), or not (the collapse-prone fully symmetric case). The predictor
is always built, so checkpoints keep one shape whether `enabled` is on or off."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..fields import bounded, choice
from ..heads import HeadConfig, mlp
from ..losses import negative_cosine
from .base import MethodOutput, TwoViewMethod

TAU_SCHEDULES = ("cosine", "constant")


@dataclass
class BYOLConfig:
    tau_base: float = bounded(0.99, 0.0, 1.0)     # momentum of the target at step 0
    tau_schedule: str = choice("cosine", TAU_SCHEDULES)  # cosine: tau rises to 1 by the end of training (BYOL); constant
    stop_grad: bool = True        # no gradient through the target branch
    use_predictor: bool = True
    target_reset_every: int = bounded(0, 0)   # copy the online weights into the target every N steps (0 = never)


def momentum_at(tau_base: float, progress: float, schedule: str) -> float:
    """BYOL's cosine schedule: tau = 1 - (1 - tau_base) * (cos(pi * progress) + 1) / 2."""
    if schedule == "constant":
        return tau_base
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1.0) / 2.0


class BYOL(TwoViewMethod):
    def __init__(self, backbone: nn.Module, cfg: BYOLConfig, projector: HeadConfig, predictor: HeadConfig):
        super().__init__(backbone, projector)
        self.cfg = cfg
        pred_cfg = copy.copy(predictor)
        pred_cfg.out_dim = projector.out_dim
        self.predictor = mlp(projector.out_dim, pred_cfg)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_backbone.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)
        self.tau = momentum_at(cfg.tau_base, 0.0, cfg.tau_schedule)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # optimizer steps taken, for resets

    def _target(self, x):
        if self.cfg.tau_base == 0.0:
            z = self.projector(self.backbone(x))
            return z.detach() if self.cfg.stop_grad else z
        with torch.no_grad():
            return self.target_projector(self.target_backbone(x))

    def forward(self, views, progress):
        (h1, h2), (z1, z2) = self.embed(views)
        p1, p2 = (self.predictor(z1), self.predictor(z2)) if self.cfg.use_predictor else (z1, z2)
        t1, t2 = self._target(views[0]), self.shuffled(self._target, views[1])
        loss = (negative_cosine(p1, t2) + negative_cosine(p2, t1)) / 2
        return MethodOutput(loss, {"regression": loss.detach()},
                            {"encoder": (h1, h2), "projector": (z1, z2), "target": (t1.detach(), t2.detach())})

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        self.tau = momentum_at(self.cfg.tau_base, progress, self.cfg.tau_schedule)
        self.updates += 1
        every = self.cfg.target_reset_every
        reset = every > 0 and int(self.updates) % every == 0
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.copy_(po) if reset else pt.lerp_(po, 1.0 - self.tau)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)
