"""The anchor term: each input's embedding kept near its embedding under a frozen snapshot of the
network, retaken every `every` steps. The snapshot lives on the model it copies, as the submodule
`model.anchor_snapshot`, so `model.state_dict()` (a checkpoint) holds it and a resumed run goes on
with the same snapshot, taken at the same step."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .consistency import consistency_loss
from .inputs import TermInputs

# The same 1 - mean cosine, between each input's embedding now and under the snapshot: 0 when
# directions are kept, 1 when orthogonal, 2 when flipped.
anchor_loss = consistency_loss

NOT_TAKEN = -1   # the step of a snapshot that holds no network's weights yet (built, not taken)


def frozen_copy(model: nn.Module, on: str) -> nn.ModuleDict:
    """A copy of the model's backbone (and, for `on="projector"`, its projector) whose weights are
    buffers: nothing optimises them, and the model's parameters (optimizer groups, a fork's check
    that every parameter loaded) are the same with the anchor term as without it."""
    backbone = model.backbone
    # What a training forward recorded (a ViT's attention maps and internals, stage outputs) holds
    # graph tensors, which do not deep-copy; the memo gives the copy none of it.
    memo = {id(v): [] for k in ("internals", "stage_outputs") if (v := getattr(backbone, k, None))}
    memo.update({id(m.last_attention): None for m in backbone.modules()
                 if getattr(m, "last_attention", None) is not None})
    parts = {"backbone": copy.deepcopy(backbone, memo)}
    if on == "projector" and hasattr(model, "projector"):
        parts["projector"] = copy.deepcopy(model.projector)
    nets = nn.ModuleDict(parts)
    for module in nets.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            delattr(module, name)
            module.register_buffer(name, p.detach())
    return nets


def _read_step(snapshot: AnchorSnapshot, incompatible_keys) -> None:
    snapshot.taken_at = int(snapshot.step)   # after a load: the host copy follows the loaded buffer


class AnchorSnapshot(nn.Module):
    """The frozen copy (`nets`) and the step it was taken at (`step`, a buffer so it is saved)."""

    def __init__(self, model: nn.Module, on: str, step: int = NOT_TAKEN):
        super().__init__()
        self.nets = frozen_copy(model, on)
        device = next(self.nets.buffers(), torch.zeros(())).device
        self.register_buffer("step", torch.tensor(step, device=device))
        self.taken_at = step   # `step` on the host: reading it each training step costs no device sync
        self.register_load_state_dict_post_hook(_read_step)

    def take(self, model: nn.Module, on: str, step: int) -> None:
        self.nets = frozen_copy(model, on)
        self.step.fill_(step)
        self.taken_at = step

    def current(self, step: int, every: int) -> bool:
        """Whether the snapshot was taken at most `every` steps before `step` (and not after it)."""
        return self.taken_at != NOT_TAKEN and 0 <= step - self.taken_at < every


def attach_anchor_snapshot(model: nn.Module, cfg) -> None:
    """Give a model whose run has the anchor term on (`cfg`: a RegularizersConfig) its snapshot before
    any checkpoint is loaded into it: a resume loads strictly, so the snapshot's keys must be there.
    A model without the term gets nothing (its state_dict, its checkpoints and forks stay as they were)."""
    if cfg.anchor.weight > 0 and not hasattr(model, "anchor_snapshot"):
        model.anchor_snapshot = AnchorSnapshot(model, cfg.anchor.on)


@torch.no_grad()
def anchor_embeddings(model: nn.Module, x: torch.Tensor, on: str, every: int, step: int) -> torch.Tensor:
    """The embedding of `x` under a snapshot of the model taken at most `every` steps ago (taken now
    when there is none that recent)."""
    snapshot = getattr(model, "anchor_snapshot", None)
    if snapshot is None:   # a model not made by build_model: attached at its first step
        model.anchor_snapshot = snapshot = AnchorSnapshot(model, on, step)
    elif not snapshot.current(step, every):
        snapshot.take(model, on, step)
    nets = snapshot.nets.train(model.training)
    h = nets["backbone"](x)
    return nets["projector"](h) if "projector" in nets else h


def anchor(inp: TermInputs, c) -> torch.Tensor:
    zs = inp.two_views(c.on, "anchor")
    return anchor_loss(zs[0], anchor_embeddings(inp.model, inp.views[0], c.on, c.every, inp.step))
