"""`apply_regularizers`: a method's output with the weighted active terms added to its loss, each
term looked up in the registry and computed from the step's inputs."""
from __future__ import annotations

import torch
from torch import nn

from ..methods.base import MethodOutput
from .config import RegularizersConfig
from .inputs import TermInputs, ramp
from .registry import REGISTRY
from .stages import take_stage_outputs
from .tokens import take_internals


def apply_regularizers(model: nn.Module, views: list[torch.Tensor], out: MethodOutput,
                       cfg: RegularizersConfig, step: int = 0) -> MethodOutput:
    """`out` with the weighted active terms added to its loss and each term (unweighted) in `terms`
    under `reg_<name>`. Terms over two views average the views; `step` drives each weight's ramp."""
    active = cfg.active()
    if not active:
        return out
    internals = take_internals(model.backbone, active) if cfg.needs_internals() else []
    stage_outputs = take_stage_outputs(model.backbone) if cfg.needs_stage_outputs() else []
    inp = TermInputs(model, views, out, step, internals, stage_outputs)
    loss, terms = out.loss, dict(out.terms)
    parts = dict(out.parts) or {"method": out.loss}
    for name in active:   # in the config's order: the terms that draw random numbers draw them in turn
        c = getattr(cfg, name)
        value = REGISTRY[name].term(inp, c)
        parts[f"reg_{name}"] = weighted = ramp(c, step) * c.weight * value
        loss = loss + weighted
        terms[f"reg_{name}"] = value.detach()
    # what the consistency and rotation terms' extra forwards recorded belongs to no step's views
    if stage_outputs:
        model.backbone.stage_outputs = []
    if internals:
        model.backbone.internals = []
    return MethodOutput(loss, terms, out.embeddings, parts)
