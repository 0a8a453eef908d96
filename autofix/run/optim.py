"""Optimizers (SGD, AdamW, LARS) and the warm-up + decay learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config.schema import OptimizerConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as used by SimCLR/BYOL/VICReg.
    Groups with `lars=False` (norms, biases) get plain SGD with momentum and no weight decay."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, eta=0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = p.norm(), g.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _is_norm_or_bias(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias")


def _by_depth(model, part: str, params: list, decay: float) -> list[tuple[float, list]]:
    """Layer-wise lr decay: the backbone's stages (its `stages()`, input first: a convnet's stem and each
    block, a ViT's patch embedding and each block; else its top-level children) get decay^(n - 1 - i)
    times the lr, so with decay < 1 early layers move least (as in BEiT/MAE fine-tuning) and with
    decay > 1 most. Other parts keep one group."""
    if part != "backbone" or decay == 1.0:
        return [(1.0, params)]
    backbone = model.backbone
    if hasattr(backbone, "stages"):
        stages, rest = backbone.stages(), -1      # what no stage holds (a ViT's final norm) is the output end
    else:
        stages, rest = [list(child.parameters()) for _, child in backbone.named_children()], 0  # direct: input end
    stages = [s for s in stages if s]
    owner = {id(p): i for i, s in enumerate(stages) for p in s}
    by_stage: dict[int, list] = {}
    for p in params:
        by_stage.setdefault(owner.get(id(p), rest % max(len(stages), 1)), []).append(p)
    n = len(stages)
    return [(decay ** (n - 1 - i), ps) for i, ps in sorted(by_stage.items())]


def build_optimizer(model, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """One param group per (part of the model) x (decayed or not); each group keeps `lr_mult` so the
    schedule scales every group by the same factor."""
    names = {id(p): n for n, p in model.named_parameters()}
    mult = {"backbone": 1.0, "head": cfg.head_lr_mult, "predictor": cfg.predictor_lr_mult}
    groups = []
    for part, params in model.param_groups().items():
        for depth_mult, ps_part in _by_depth(model, part, params, cfg.layer_lr_decay):
            plain = [p for p in ps_part if cfg.exclude_norm_bias and _is_norm_or_bias(names.get(id(p), ""), p)]
            plain_ids = {id(p) for p in plain}
            decayed = [p for p in ps_part if id(p) not in plain_ids]
            m = mult[part] * depth_mult
            for ps, wd, adapt in ((decayed, cfg.weight_decay, True), (plain, 0.0, False)):
                if ps:
                    groups.append({"params": ps, "weight_decay": wd, "lr": cfg.lr * cfg.lr_scale * m,
                                   "lr_mult": m, "lars": adapt, "decayed": adapt, "part": part})
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    if cfg.name == "radam":  # Adam with its variance rectified in the first steps (Liu et al. 2020)
        return torch.optim.RAdam(groups, lr=cfg.lr, betas=tuple(cfg.betas), decoupled_weight_decay=True)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(step: int, max_steps: int, cfg: OptimizerConfig) -> float:
    """Linear warm-up from 0, then cosine (or linear, or constant) decay to min_lr_ratio by decay_steps
    (default: the run's end); or cosine decay restarted every `restart_steps` (SGDR, Loshchilov & Hutter
    2017, with a fixed period)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine_restarts":
        t = (max(step - cfg.warmup_steps, 0) % cfg.restart_steps) / cfg.restart_steps
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    span = max((cfg.decay_steps or max_steps) - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    decay = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1.0 - t
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


def weight_decay_at(step: int, max_steps: int, cfg: OptimizerConfig) -> float:
    """The weight decay at `step`: cfg.weight_decay, or with weight_decay_end set a cosine from
    weight_decay at step 0 to weight_decay_end at max_steps."""
    if cfg.weight_decay_end is None:
        return cfg.weight_decay
    t = min(step / max(max_steps, 1), 1.0)
    return cfg.weight_decay_end + (cfg.weight_decay - cfg.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * t))


def set_weight_decay(optimizer, step: int, max_steps: int, cfg: OptimizerConfig) -> None:
    """Put the scheduled weight decay into every decayed param group (norms and biases stay at 0)."""
    wd = weight_decay_at(step, max_steps, cfg)
    for group in optimizer.param_groups:
        if group.get("decayed", True):
            group["weight_decay"] = wd


def build_scheduler(optimizer, max_steps: int, cfg: OptimizerConfig, start_step: int = 0):
    """Warm-up then decay over max_steps; `start_step` > 0 places a fresh scheduler mid-run (a forked child)."""
    if start_step:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, max_steps, cfg),
                                             last_epoch=start_step - 1)


def pcgrad(grads: list[torch.Tensor]) -> torch.Tensor:
    """Gradient surgery (PCGrad, Yu et al. 2020) on flat gradients, one per loss term: each term's gradient
    loses its component along every other term's (original) gradient it conflicts with (negative dot
    product), and the results are summed. Terms that do not conflict add up as they are. The others are
    taken in a fixed order (the paper shuffles them), so a run stays reproducible."""
    out = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        g = g.clone()
        for j, other in enumerate(grads):
            dot = torch.dot(g, other)
            if j != i and dot < 0:
                g -= dot / other.pow(2).sum().clamp_min(1e-20) * other
        out += g
    return out


def surgery_backward(model, parts: dict, scaler, accum_steps: int) -> None:
    """trainer.pcgrad: one gradient per loss term, the conflicting components removed (`pcgrad`), added
    into .grad as a plain backward would."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat, used = [], [False] * len(params)
    for part in parts.values():
        gs = torch.autograd.grad(scaler.scale(part / accum_steps), params, retain_graph=True, allow_unused=True)
        used = [u or g is not None for u, g in zip(used, gs)]
        flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params)]))
    combined, start = pcgrad(flat), 0
    for p, u in zip(params, used):
        g = combined[start:start + p.numel()].view_as(p)
        start += p.numel()
        if u:   # a parameter no term reaches keeps no gradient, as after a plain backward
            p.grad = g.clone() if p.grad is None else p.grad + g
