"""Starting a child from its parent's checkpoint: the weights that still fit, the optimizer moments
where the optimizer is the same, heads re-initialised on request (at the fork and every N steps), and
shrink-and-perturb of the backbone."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config.schema import RunConfig, TrainerConfig
from ..core.errors import ConfigError
from . import checkpoint as ckpt
from .optim import build_scheduler


def fork_from(trainer, path: Path) -> None:
    """Start as a child of the run that wrote `path`. Weights whose name and shape still fit are
    loaded (a patch that changes the architecture re-initialises the rest, listed in fork_info; so do
    the heads in trainer.reinit_heads, and the backbone when model.init differs from the parent's;
    trainer.fork_shrink / fork_perturb then shrink and perturb the backbone);
    optimizer moments carry over only for the same optimizer and grouping, and its hyperparameters
    (lr, weight decay, betas, ...) always come from this run's config, the patched one. The data
    order and augmentation follow this run's seed, so replicate children differ."""
    state = ckpt.load(path)
    own = trainer.model.state_dict()
    # the anchor regularizer's snapshot is retaken at the child's first step, as before it was saved:
    # a parent's would be stale after a head reset or shrink-and-perturb
    restart = reinit_prefixes(trainer.model, trainer.cfg) + ("anchor_snapshot.",)
    if state.get("model_init", trainer.cfg.model.init) != trainer.cfg.model.init:
        # a patch of the init scheme means "start the backbone over, under the new scheme", from here
        restart += ("backbone.", "target_backbone.")
    fits = {k: v for k, v in state["model"].items() if k in own and own[k].shape == v.shape
            and not k.startswith(restart)}
    trainer.model.load_state_dict(fits, strict=False)
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
    saved = state["optimizer"]
    same = (state.get("optimizer_name", trainer.cfg.optimizer.name) == trainer.cfg.optimizer.name
            # every parameter loaded (a patch that only adds buffers, a queue or a centre, keeps the moments)
            and all(name in fits for name, _ in trainer.model.named_parameters())
            and [len(g["params"]) for g in saved["param_groups"]] == [len(g["params"]) for g in trainer.optimizer.param_groups])
    if same:
        trainer.optimizer.load_state_dict(saved)
        for group, hyper in zip(trainer.optimizer.param_groups, fresh):
            group.update(hyper)
    trainer.step = int(state["step"])
    trainer.parent_hook_states = state.get("hooks") or {}
    shrink_and_perturb(trainer.model, trainer.cfg.trainer)
    trainer.scheduler = build_scheduler(trainer.optimizer, trainer.cfg.trainer.max_steps, trainer.cfg.optimizer,
                                        trainer.step)
    trainer.fork_info = {"checkpoint": str(path), "step": trainer.step, "optimizer_state": same,
                         "reinitialized": sorted(set(own) - set(fits))}


@torch.no_grad()
def shrink_and_perturb(model, t: TrainerConfig) -> None:
    """trainer.fork_shrink / fork_perturb: each backbone weight matrix or filter bank becomes
    shrink * w + perturb * noise, the noise a fresh Kaiming-normal draw (std sqrt(2 / fan_in)) whatever
    the run's own init, so that units that are copies of each other get told apart."""
    if t.fork_shrink == 1.0 and t.fork_perturb == 0.0:
        return
    g = torch.Generator().manual_seed(t.seed + 2)
    for p in model.backbone.parameters():
        if p.dim() < 2:
            continue
        noise = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        p.mul_(t.fork_shrink).add_(noise, alpha=t.fork_perturb * (2.0 / p[0].numel()) ** 0.5)


def reinit_heads(trainer) -> None:
    """Give the heads trainer.reinit_heads names PyTorch's default initialisation again, drop their
    optimizer moments, and make their momentum copies (BYOL's target) equal to them."""
    fresh = reinit_prefixes(trainer.model, trainer.cfg)
    for name, module in trainer.model.named_children():
        if not f"{name}.".startswith(fresh) or name.startswith("target_"):
            continue
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            for p in sub.parameters(recurse=False):
                trainer.optimizer.state.pop(p, None)
        target = getattr(trainer.model, f"target_{name}", None)
        if target is not None:
            target.load_state_dict(module.state_dict())


def reinit_prefixes(model, cfg: RunConfig) -> tuple[str, ...]:
    """State-dict prefixes of the modules trainer.reinit_heads names, with their momentum copies
    (BYOL's target_projector): those keep this run's fresh initialisation at the fork."""
    names = list(cfg.trainer.reinit_heads)
    # a head is a child module other than the backbone, named by its first word: MAE's decoder is
    # decoder_embed, decoder, decoder_norm and decoder_pred
    heads = sorted({n.split("_")[0] for n, _ in model.named_children()} - {"backbone", "target", "anchor"})
    unknown = [n for n in names if n not in heads]
    if unknown:
        raise ConfigError(f"trainer.reinit_heads: {', '.join(unknown)} is not a head of this "
                          f"{cfg.method.name} model; valid: {', '.join(heads) or 'none'}")
    return tuple(f"{p}{n}{sep}" for n in names for p in ("", "target_") for sep in (".", "_"))
