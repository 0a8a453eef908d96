"""Optimisation health: gradient norms, how far a step moves the weights, how far the weights have
drifted from their start, and non-finite values. Norms are taken in float64 so that exploding
gradients (1e20 and beyond) do not overflow to Inf before they are reported."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

NAN = float("nan")


def _sq(t: torch.Tensor) -> torch.Tensor:
    """Squared l2 norm in float64 (float32 squares overflow above about 1e19), left on the device."""
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float64).pow(2)


def to_floats(tensors: list[torch.Tensor]) -> list[float]:
    """0-d tensors as floats in one transfer: on a GPU each .item() waits for the device (a ResNet has
    over 60 parameter tensors, and a check measures several sums over all of them)."""
    if not tensors:
        return []
    device = tensors[0].device  # the model's; a tensor elsewhere (rare) is moved there
    return torch.stack([t.to(device) for t in tensors]).tolist()


def norm_sq(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Squared l2 norm of all the tensors as one vector, float64, left on the device (0-d)."""
    sq = [_sq(t) for t in tensors]
    return torch.stack(sq).sum() if sq else torch.zeros((), dtype=torch.float64)


def distance_sq(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> torch.Tensor:
    """Squared l2 distance between two parameter lists taken as one vector each, float64, on the device."""
    return norm_sq([x.detach().to(torch.float64) - y.detach().to(torch.float64) for x, y in _paired(a, b)])


def _ratio(num_sq: float, den_sq: float) -> float:
    if den_sq == 0:
        return NAN if num_sq == 0 else math.inf
    return math.sqrt(num_sq) / math.sqrt(den_sq)


def grad_norms(named_parameters: Iterable[tuple[str, torch.Tensor]]) -> dict:
    """Gradient l2 norms: `global` (all gradients as one vector, as clip_grad_norm_ measures it),
    `per_layer` (name -> norm, parameters with a gradient only) and `first_last_ratio`: the norm of the
    first weight tensor (ndim >= 2, registration order) over the last one; far below 1 means the
    gradient vanishes on its way to the input layers. NaN where there is nothing to measure."""
    with_grad = [(name, p) for name, p in named_parameters if p.grad is not None]
    sqs = to_floats([_sq(p.grad) for _, p in with_grad])
    per_layer = {name: math.sqrt(sq) for (name, _), sq in zip(with_grad, sqs)}
    total = sum(sqs)
    # weights, not biases or norm scales: those are what carry depth
    matrices = [sq for (_, p), sq in zip(with_grad, sqs) if p.dim() >= 2]
    ratio = _ratio(matrices[0], matrices[-1]) if len(matrices) >= 2 else NAN
    return {"global": math.sqrt(total) if per_layer else NAN, "per_layer": per_layer,
            "first_last_ratio": ratio}


def snapshot(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of the parameters, to compare with later (update_ratio, weight_norm_ratio)."""
    return [p.detach().clone() for p in params]


def _paired(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"parameter lists differ in length: {len(a)} vs {len(b)}")
    return list(zip(a, b))


def update_ratio(before: Iterable[torch.Tensor], after: Iterable[torch.Tensor]) -> float:
    """||after - before|| / ||before||, all tensors as one vector: the relative size of an optimiser
    step. About 1e-3 is the usual rule of thumb (Karpathy); far above means a too-high learning rate,
    far below (or 0) means the weights are not moving."""
    before, after = list(before), list(after)
    diff, base = to_floats([distance_sq(after, before), norm_sq(before)])  # one transfer
    return _ratio(diff, base)


def _first_over_last(stages: list[list[int]], num_sq, den_sq) -> float:
    """sqrt(num/den) of the first stage over that of the last. `num_sq` and `den_sq` map a picker (a
    parameter list -> that stage's tensors) to a squared norm; the four are read in one transfer. NaN
    with fewer than two stages, or where the last stage's ratio is 0, infinite or undefined."""
    if len(stages) < 2:
        return NAN
    pickers = [lambda params, k=k: [params[i] for i in stages[k]] for k in (0, -1)]
    sq = to_floats([num_sq(p) for p in pickers] + [den_sq(p) for p in pickers])
    first, last = _ratio(sq[0], sq[2]), _ratio(sq[1], sq[3])
    return NAN if not last or math.isnan(first) or math.isinf(last) or math.isnan(last) else first / last


def depth_update_ratio(before: list[torch.Tensor], after: list[torch.Tensor], stages: list[list[int]]) -> float:
    """update_ratio of the first stage (the input end) over that of the last, `stages` listing indices
    into the two parameter lists, input first. Near 0 when the first layers do not move while the last
    ones learn (a learning rate that vanishes towards the input, frozen or starved early layers); NaN
    where the last stage did not move either, or there are fewer than two stages."""
    return _first_over_last(stages, lambda pick: distance_sq(pick(after), pick(before)),
                            lambda pick: norm_sq(pick(before)))


def depth_norm_growth(current: list[torch.Tensor], initial: list[torch.Tensor], stages: list[list[int]]) -> float:
    """weight_norm_ratio of the first stage (the input end) over that of the last: about 1 when the whole
    network grew or shrank alike, far above 1 when the weight energy piled up in the first layers. NaN
    with fewer than two stages or an empty one."""
    return _first_over_last(stages, lambda pick: norm_sq(pick(current)), lambda pick: norm_sq(pick(initial)))


def weight_norm_ratio(current: Iterable[torch.Tensor], initial: Iterable[torch.Tensor]) -> float:
    """||current|| / ||initial||, all tensors as one vector: growth (divergence, no weight decay) or
    shrinkage (too much weight decay) of the weights since a reference point."""
    pairs = _paired(current, initial)
    return _ratio(*to_floats([norm_sq(c for c, _ in pairs), norm_sq(i for _, i in pairs)]))  # one transfer


def duplicate_unit_share(weights: Iterable[torch.Tensor], threshold: float = 0.95) -> float:
    """The share of units (conv filters, rows of linear weights; layers with at least two units and two
    inputs each) whose nearest other unit in the same layer has |cosine| above `threshold`: near-duplicate
    or sign-flipped copies compute nothing new. Random initialisations of a few inputs per unit already
    reach 0.9 now and then, hence a high threshold. NaN when no layer qualifies."""
    dup, total = [], 0
    for w in weights:
        if w.dim() < 2 or w.shape[0] < 2 or w[0].numel() < 2:
            continue
        rows = torch.nn.functional.normalize(w.detach().float().reshape(w.shape[0], -1), dim=1)
        cos = (rows @ rows.T).abs().fill_diagonal_(0.0)
        dup.append((cos.amax(dim=1) > threshold).sum())
        total += w.shape[0]
    return sum(to_floats(dup)) / total if total else NAN


def count_nonfinite(*tensors_or_iterables) -> int:
    """Number of NaN or +-Inf elements across the arguments: tensors, None (a missing gradient,
    skipped), or iterables / dicts of those, nested to any depth. A NaN is a symptom, not a crash."""
    count, on_device = 0, []
    stack = list(tensors_or_iterables)
    while stack:
        item = stack.pop()
        if item is None:
            continue
        if isinstance(item, torch.Tensor):
            if item.is_floating_point() or item.is_complex():  # integer tensors are always finite
                on_device.append((~torch.isfinite(item.detach())).sum())
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (int, float)):
            count += 0 if math.isfinite(item) else 1
        elif isinstance(item, (str, bytes)):
            raise TypeError(f"count_nonfinite takes tensors, None or iterables of them, not {type(item).__name__}")
        else:
            try:
                stack.extend(item)
            except TypeError:
                raise TypeError("count_nonfinite takes tensors, None or iterables of them, "
                                f"not {type(item).__name__}") from None
    return count + int(sum(to_floats(on_device)))

