"""The monitor's metric group for what training itself leaves behind, no forward pass needed: the loss
over a window (level, improvement, spikes, oscillation), gradient norms, and how the weights move
(norm growth since init, relative steps, by depth, the head against the backbone)."""
from __future__ import annotations

import math

import torch

from . import dynamics, optimization


def _stage_indices(backbone, weights: list) -> list[list[int]]:
    """The backbone's stages (input first) as indices into `weights`, its parameter list: what
    depth_update_ratio compares. Empty for a backbone that names no stages."""
    if not hasattr(backbone, "stages"):
        return []
    where = {id(w): i for i, w in enumerate(weights)}
    return [[where[id(p)] for p in stage if id(p) in where] for stage in backbone.stages()]


class TrainingSignals:
    def __init__(self, every: int, loss_window: int):
        self.every, self.loss_window = every, loss_window
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []
        self.grad_history: list[float] = []
        self.first_loss = float("nan")     # mean loss over the first check's window: the start's loss
        self.min_loss = float("nan")       # the lowest such mean so far
        self.window: list[float] = []      # the losses of the last `loss_window` steps, at the latest check

    def start(self, model) -> None:
        weights = list(model.backbone.parameters())
        self.initial = optimization.snapshot(weights)
        self.previous = optimization.snapshot(weights)
        self.previous_head = optimization.snapshot(list(model.projector.parameters())) \
            if hasattr(model, "projector") else None
        self.stages = _stage_indices(model.backbone, weights)

    def after_step(self, model, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach().float())
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            self.grad_norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))

    def measure(self, model) -> dict[str, float]:
        m = self._loss_metrics()
        m.update(self._weight_metrics(model))
        return m

    def _loss_metrics(self) -> dict[str, float]:
        """The loss and gradients over the window since the last check."""
        m: dict[str, float] = {}
        window = torch.stack(self.losses[-self.loss_window:]).tolist() if self.losses else []
        recent = self.losses[-self.every:]
        m["train/nonfinite_loss"] = float(sum(not math.isfinite(v) for v in torch.stack(recent).tolist())) \
            if recent else 0.0
        if window and math.isnan(self.first_loss):
            first = window[-self.every:]
            self.first_loss = sum(first) / len(first)
        m.update(self._loss_level(recent))
        m["loss/rel_improvement"] = dynamics.relative_improvement(window)
        m["loss/spike_score"] = dynamics.robust_spike_score(window)
        m["loss/oscillation"] = dynamics.oscillation(window)
        if self.grad_norms:
            gn = torch.stack(self.grad_norms[-self.every:]).tolist()
            # the running median over the last 1000 steps: long runs must not pay for their whole past
            self.grad_history = (self.grad_history + gn)[-1000:]
            median = float(torch.tensor(self.grad_history).nanmedian())
            m["grad/norm"] = gn[-1]
            m["grad/max_over_median"] = max(gn) / median if median > 0 else float("nan")
        self.losses = self.losses[-self.loss_window:]
        self.grad_norms = []
        self.window = window
        return m

    def _loss_level(self, recent: list) -> dict[str, float]:
        """The loss over the last check's steps, and how much of the progress made since the start it has
        given back: 0 at a new low, 1 back at the start (the catalog's "loss gradually increases instead
        of decreasing"). NaN before there is progress to give back."""
        vals = [v for v in (torch.stack(recent).tolist() if recent else []) if math.isfinite(v)]
        if not vals:
            return {}
        now = sum(vals) / len(vals)
        self.min_loss = now if math.isnan(self.min_loss) else min(self.min_loss, now)
        return {"loss/mean": now, "loss/rise_from_min": dynamics.progress_given_back(self.first_loss,
                                                                                   self.min_loss, now)}

    def _weight_metrics(self, model) -> dict[str, float]:
        m: dict[str, float] = {}
        m["grad/first_last_ratio"] = optimization.grad_norms(model.backbone.named_parameters())["first_last_ratio"]
        weights = list(model.backbone.parameters())
        m["weights/norm_ratio"] = optimization.weight_norm_ratio(weights, self.initial)
        m["weights/update_ratio"] = optimization.update_ratio(self.previous, weights)
        m["weights/depth_update_ratio"] = optimization.depth_update_ratio(self.previous, weights, self.stages)
        # the stem's growth since init over the last stage's: the catalog's "weight energy concentrates in
        # the first 1-2 conv layers"
        m["weights/depth_norm_growth"] = optimization.depth_norm_growth(weights, self.initial, self.stages)
        m["weights/nonfinite"] = float(optimization.count_nonfinite(weights))
        m["weights/duplicate_units"] = optimization.duplicate_unit_share(weights)
        self.previous = optimization.snapshot(weights)
        if self.previous_head is not None:
            # the projector's relative step over the backbone's: the catalog's "encoder stops improving,
            # projector keeps changing" is a head that moves while the backbone does not
            head = list(model.projector.parameters())
            m["weights/head_update_ratio"] = optimization.update_ratio(self.previous_head, head)
            # the backbone's share of the two relative steps: 0 when only the head moves, 1/2 when alike
            steps = m["weights/update_ratio"] + m["weights/head_update_ratio"]
            m["weights/backbone_step_share"] = m["weights/update_ratio"] / steps if steps > 0 else float("nan")
            self.previous_head = optimization.snapshot(head)
        return m

    def state_dict(self) -> dict:
        return {"initial": self.initial, "previous": self.previous, "previous_head": self.previous_head,
                "losses": [float(v) for v in self.losses], "grad_norms": [float(v) for v in self.grad_norms],
                "grad_history": list(self.grad_history), "first_loss": self.first_loss, "min_loss": self.min_loss}

    def load_state_dict(self, state: dict, device) -> None:
        self.initial = [t.to(device) for t in state["initial"]]
        self.previous = [t.to(device) for t in state["previous"]]
        if state["previous_head"] is not None and self.previous_head is not None:
            self.previous_head = [t.to(device) for t in state["previous_head"]]
        self.losses = [torch.tensor(v, device=device) for v in state["losses"]]
        self.grad_norms = [torch.tensor(v, device=device) for v in state["grad_norms"]]
        self.grad_history = list(state["grad_history"])
        self.first_loss, self.min_loss = state["first_loss"], state["min_loss"]
