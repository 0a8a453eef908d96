"""Auxiliary regularizers any method can switch on with a weight: the catalog's most frequent
suggestion ("add a loss term") made executable. Each term is a pure function of embeddings (or of
weights) with a known answer; `apply_regularizers` adds the weighted terms to a method's loss and
reports each one unweighted, so a run logs them beside the method's own terms."""
from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .fields import bounded, choice
from .augment import at_resolution, shifted, shuffle_blocks
from .losses import covariance_matrix, covariance_term, variance_term
from .methods.base import MethodOutput

BRANCHES = ("encoder", "projector")


# ---- the terms (pure functions) -------------------------------------------------------------------
def uniformity_loss(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020): log mean exp(-t ||u_i - u_j||^2) over distinct pairs of l2-normalised rows.
    0 when every row is the same point; lower (negative) when the rows spread over the sphere."""
    u = F.normalize(z.float(), dim=1)
    sq = torch.pdist(u).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(sq.numel()), device=z.device))


def entropy_loss(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Negative entropy of the batch-mean softmax over dimensions (the mean-entropy maximisation of
    MSN / DINO-style prototypes): -log(D) when the batch uses every dimension equally, 0 when all
    of it lands in one."""
    p = F.softmax(z.float() / temperature, dim=1).mean(dim=0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


def orthogonality_loss(weights: list[torch.Tensor]) -> torch.Tensor:
    """Soft orthogonality (Bansal et al. 2018): mean over matrices of ||W W^T - I||_F^2 / rows, taken on
    the side with fewer rows. 0 for matrices with orthonormal rows (or columns)."""
    total = None
    for w in weights:
        w = w.float().flatten(1)
        if w.shape[0] > w.shape[1]:
            w = w.T
        gram = w @ w.T
        err = (gram - torch.eye(len(gram), device=w.device)).pow(2).sum() / len(gram)
        total = err if total is None else total + err
    return total / len(weights) if weights else torch.zeros(())


def filter_similarity_loss(weights: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared cosine between two different units (conv filters or rows of a
    linear weight, flattened): 0 when every layer's units are orthogonal, 1 when they are all copies (or
    sign-flipped copies) of one. Unlike soft orthogonality it ignores the units' norms."""
    total = None
    for w in weights:
        u = torch.nn.functional.normalize(w.float().flatten(1), dim=1)
        n = u.shape[0]
        cos2 = (u @ u.T).pow(2)
        err = (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))
        total = err if total is None else total + err
    return total / len(weights) if weights else torch.zeros(())


def feature_norm_loss(z: torch.Tensor, target: float = 0.0) -> torch.Tensor:
    """Mean squared distance of each row's l2 norm from `target` (0: a plain feature-norm penalty)."""
    return (z.float().norm(dim=1) - target).pow(2).mean()


def consistency_loss(z: torch.Tensor, z_noisy: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine between embeddings of an input and of the same input with noise: 0 when the
    noise changes no direction, 1 when the two are orthogonal."""
    return 1.0 - F.cosine_similarity(z.float(), z_noisy.float(), dim=1).mean()


def overalignment_loss(z1: torch.Tensor, z2: torch.Tensor, margin: float = 0.9) -> torch.Tensor:
    """Mean of relu(cos(z1_i, z2_i) - margin) over the pairs: 0 while every pair of views is at most
    `margin` alike, growing as pairs coincide (1 - margin when identical). A cap on alignment, where
    the methods' own losses only pull pairs together."""
    return F.relu(F.cosine_similarity(z1.float(), z2.float(), dim=1) - margin).mean()


def repulsion_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cosine to the nearest other row: 1 when rows coincide, 0 when all are
    orthogonal, so minimising it pushes each embedding away from its closest neighbour."""
    u = F.normalize(z.float(), dim=1)
    sim = u @ u.T
    sim = sim - 2.0 * torch.eye(len(u), device=u.device)  # exclude self-similarity from the max
    return sim.max(dim=1).values.mean()


# The anchor term is the same 1 - mean cosine, between each input's embedding now and under an earlier
# snapshot of the network: 0 when directions are kept, 1 when orthogonal, 2 when flipped.
anchor_loss = consistency_loss


def covariance_gap(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance between the two views' covariance matrices, over d: 0 when both views
    spread the batch along the same axes by the same amounts, whatever their means."""
    return (covariance_matrix(z1.float()) - covariance_matrix(z2.float())).pow(2).sum() / z1.shape[1]


def layerwise_vc_loss(feats: list[torch.Tensor], gamma: float = 1.0, cov_ratio: float = 0.04) -> torch.Tensor:
    """VICReg's variance hinge plus `cov_ratio` times its covariance term on each layer's pooled output
    (N, C) on its own, averaged over layers: a collapse penalty for the intermediate layers, not only the
    embedding. 0.04 is VICReg's own covariance-to-variance weight (1 to 25)."""
    return sum(variance_term(f.float(), gamma) + cov_ratio * covariance_term(f.float()) for f in feats) / len(feats)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al. 2019) between two representations (N, Da) and (N, Db) of the same
    inputs: 1 when one is a rotation and isotropic scaling of the other, near 0 when unrelated.
    Differentiable; from the cross-covariance, so the cost grows with width, not N^2."""
    a, b = _upcast(a), _upcast(b)
    a, b = a - a.mean(0), b - b.mean(0)
    cross = (a.T @ b).pow(2).sum()
    return cross / ((a.T @ a).pow(2).sum() * (b.T @ b).pow(2).sum()).sqrt().clamp_min(1e-12)


def layer_redundancy_loss(feats: list[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between each layer's pooled output (N, C) and the next one's, averaged over the pairs:
    a penalty on neighbouring layers that hold the same representation (a block that computes nothing
    new). Needs two layers or more."""
    return sum(linear_cka(a, b) for a, b in zip(feats, feats[1:])) / (len(feats) - 1)


def norm_preservation_loss(feats: list[torch.Tensor]) -> torch.Tensor:
    """Squared log ratio of each layer's feature scale to the next one's, averaged over the pairs; a
    layer's scale is the root mean square of its pooled output (N, C) per channel, so layers of
    different widths compare. 0 when the scale holds through the depth; a layer whose output shrinks
    (or grows) tenfold adds log(10)^2 = 5.3."""
    scale = [_upcast(f).pow(2).mean().clamp_min(1e-12).log() / 2 for f in feats]
    return sum((b - a).pow(2) for a, b in zip(scale, scale[1:])) / (len(feats) - 1)


def rotate_quarters(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image of (B, C, H, W) square images turned by k[i] quarter turns (counter-clockwise)."""
    out = x.clone()
    for q in (1, 2, 3):
        sel = k == q
        if sel.any():
            out[sel] = torch.rot90(x[sel], q, dims=(2, 3))
    return out


def rotation_loss(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each image's quarter turns (RotNet's pretext task): log 4 at chance."""
    return F.cross_entropy(logits.float(), k)


def position_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each patch token's position from the token itself (B, T, T logits, the
    tokens in position order): log T at chance, 0 when every token tells where it sits."""
    b, t, _ = logits.shape
    target = torch.arange(t, device=logits.device).repeat(b)
    return F.cross_entropy(logits.float().reshape(b * t, t), target)


def reconstruction_loss(pred: torch.Tensor, images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean squared error between a head's output (B, C*size*size) and the images average-pooled to
    size x size: how much of the picture the features still hold."""
    return F.mse_loss(pred.float(), F.adaptive_avg_pool2d(images.float(), size).flatten(1))


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()   # bf16/fp16 under autocast


def mean_pair_cosine(x: torch.Tensor) -> torch.Tensor:
    """(N, K, F) -> the cosine between two different rows of the same group, averaged over pairs and
    groups: 1 when a group's rows are one direction, near 0 for unrelated rows. Needs K >= 2."""
    u = F.normalize(_upcast(x), dim=2)
    k = u.shape[1]
    total = u.sum(dim=1).pow(2).sum(dim=1)      # |sum of unit vectors|^2 = k + the sum over pairs i != j
    return ((total - k) / (k * (k - 1))).mean()


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean entropy of attention rows (N, H, T, T) over log(T): 1 when every query attends to all T
    keys alike, 0 when each attends to a single key."""
    p = _upcast(attn)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
    return h.mean() / math.log(attn.shape[-1])


def attention_entropy_loss(maps: list[torch.Tensor], target: float) -> torch.Tensor:
    """Mean over blocks of (normalised attention entropy - target)^2: pulls attention that selects
    one key (entropy 0) or nothing (entropy 1) towards a target in between."""
    return sum((attention_entropy(a) - target).pow(2) for a in maps) / len(maps)


def head_diversity_loss(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the cosine between two heads' attention maps of the same image: 1 when all
    heads attend alike; minimising it makes heads specialise."""
    return sum(mean_pair_cosine(a.flatten(2)) for a in maps) / len(maps)


def token_similarity_loss(tokens: torch.Tensor) -> torch.Tensor:
    """Mean cosine between two different patch tokens (class token excluded) of the same image: 1 when
    every token of an image is one vector (token collapse, over-smoothing)."""
    return mean_pair_cosine(tokens[:, 1:])


# ---- configuration --------------------------------------------------------------------------------
@dataclass
class Term:
    weight: float = bounded(0.0, 0.0)          # 0 = off
    ramp_steps: int = bounded(0, 0)            # the weight rises linearly from 0 over these steps; 0 = at once


@dataclass
class BranchTerm(Term):
    on: str = choice("projector", BRANCHES)    # which embedding it acts on (MAE has only the encoder)


@dataclass
class VarianceReg(BranchTerm):
    gamma: float = bounded(1.0, 0.0)           # target std per dimension


@dataclass
class UniformityReg(BranchTerm):
    t: float = bounded(2.0, 0.0)


@dataclass
class EntropyReg(BranchTerm):
    temperature: float = bounded(0.1, 1e-4)


@dataclass
class FeatureNormReg(BranchTerm):
    target: float = bounded(0.0, 0.0)


@dataclass
class ConsistencyReg(BranchTerm):
    perturbation: str = choice("noise", ("noise", "lowres", "shuffle", "shift"))  # Gaussian input noise, the
                                               # view at a lower resolution (scale consistency), its blocks
                                               # shuffled (permutation invariance), or moved by a few pixels
                                               # (crop consistency; the uncovered border 0, the mean colour)
    sigma: float = bounded(0.1, 0.0)           # noise: std of the Gaussian input noise, in normalised units
    lowres: float = bounded(0.5, 0.05, 1.0)    # lowres: the side's fraction it is downsampled to
    grid: int = bounded(4, 2, 32)              # shuffle: blocks per side (the image side must divide by it)
    shift: float = bounded(0.125, 0.0, 0.5)    # shift: the side's fraction the view moves right and down by


@dataclass
class AnchorReg(BranchTerm):
    every: int = bounded(50, 1)                # steps between snapshots of the network it is anchored to


@dataclass
class AttentionEntropyReg(Term):
    target: float = bounded(0.7, 0.0, 1.0)     # the normalised entropy each block's attention is pulled to


@dataclass
class OveralignmentReg(BranchTerm):
    margin: float = bounded(0.9, -1.0, 1.0)    # positive cosine above which a pair is penalised


@dataclass
class LayerVCReg(Term):
    gamma: float = bounded(1.0, 0.0)           # target std per channel of each layer's pooled output
    cov_ratio: float = bounded(0.04, 0.0)      # weight of the covariance part against the variance hinge


@dataclass
class ReconstructionReg(Term):
    size: int = bounded(8, 2, 64)              # side of the average-pooled image the head reconstructs


# terms with a head of their own on the encoder's features (built beside the model: AUX_TERMS)
AUX_TERMS = ("rotation", "reconstruction", "position")


def build_aux_heads(cfg: "RegularizersConfig", feature_dim: int, channels: int,
                    num_patches: int | None = None) -> nn.ModuleDict | None:
    """The auxiliary heads the active terms need, trained with the network: a linear 4-way classifier for
    the rotation task, a one-hidden-layer decoder for the reconstruction task, a linear classifier over a
    ViT's `num_patches` positions for the position task."""
    heads = {}
    if cfg.position.weight > 0:
        if not num_patches:
            raise ValueError("regularizers.position predicts a ViT's patch positions: this backbone has no patch "
                             "tokens (use model=vit_tiny or model=vit_small)")
        heads["position"] = nn.Linear(feature_dim, num_patches)
    if cfg.rotation.weight > 0:
        heads["rotation"] = nn.Linear(feature_dim, 4)
    if cfg.reconstruction.weight > 0:
        hidden = max(feature_dim, 128)
        heads["reconstruction"] = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(),
                                                nn.Linear(hidden, channels * cfg.reconstruction.size ** 2))
    return nn.ModuleDict(heads) if heads else None


# terms on a ViT's attention maps and tokens, recorded during the training forward (VisionTransformer.internals)
TOKEN_TERMS = ("attention_entropy", "head_diversity", "token_similarity")
STAGE_TERMS = ("layer_vc", "layer_redundancy", "norm_preservation")   # read the intermediate stages' outputs


@dataclass
class RegularizersConfig:
    variance: VarianceReg = field(default_factory=VarianceReg)
    covariance: BranchTerm = field(default_factory=BranchTerm)
    uniformity: UniformityReg = field(default_factory=UniformityReg)
    entropy: EntropyReg = field(default_factory=EntropyReg)
    orthogonality: Term = field(default_factory=Term)  # on every linear layer of the projector (or predictor)
    feature_norm: FeatureNormReg = field(default_factory=FeatureNormReg)
    consistency: ConsistencyReg = field(default_factory=ConsistencyReg)
    repulsion: BranchTerm = field(default_factory=BranchTerm)
    attention_entropy: AttentionEntropyReg = field(default_factory=AttentionEntropyReg)
    head_diversity: Term = field(default_factory=Term)
    token_similarity: Term = field(default_factory=Term)
    filter_diversity: Term = field(default_factory=Term)   # on the backbone's conv filters and linear rows
    anchor: AnchorReg = field(default_factory=AnchorReg)    # embeddings kept near a recent snapshot's
    view_covariance: BranchTerm = field(default_factory=BranchTerm)  # the two views' covariances matched
    layer_vc: LayerVCReg = field(default_factory=LayerVCReg)  # variance/covariance on every intermediate stage
    layer_redundancy: Term = field(default_factory=Term)      # CKA between neighbouring intermediate stages
    position: Term = field(default_factory=Term)   # a ViT's patch tokens predict their own position (a head)
    norm_preservation: Term = field(default_factory=Term)  # feature scale kept from stage to stage to the output
    overalignment: OveralignmentReg = field(default_factory=OveralignmentReg)  # positives capped at a cosine
    rotation: Term = field(default_factory=Term)            # predict each image's quarter turns from its features
    reconstruction: ReconstructionReg = field(default_factory=ReconstructionReg)  # decode a small image from them

    def active(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name).weight > 0]

    def needs_internals(self) -> bool:
        return any(name in TOKEN_TERMS for name in self.active())

    def needs_stage_outputs(self) -> bool:
        return any(name in STAGE_TERMS for name in self.active())


def record_stage_outputs(backbone: nn.Module) -> None:
    """Keep the pooled output of each intermediate stage (all of `feature_stages()` but the last, whose
    output is the encoder's) of every training forward with gradients, in `backbone.stage_outputs`: the
    layer-wise term reads them after the method's forward, as the token terms read a ViT's internals.
    Forwards without gradients (the momentum target, probes, the monitor) are not kept."""
    stages = backbone.feature_stages()[:-1]
    if not stages:
        raise ValueError("regularizers.layer_vc, layer_redundancy and norm_preservation act on intermediate "
                         "stages: this backbone has only one (raise model.depth)")
    backbone.stage_outputs = []
    backbone.n_feature_stages = len(stages)

    def keep(module, args, out):
        if module.training and torch.is_grad_enabled():
            backbone.stage_outputs.append(out.mean(dim=(2, 3)) if out.dim() == 4 else out.mean(dim=1))

    for stage in stages:
        stage.register_forward_hook(keep)


def _take_stage_outputs(backbone: nn.Module) -> list[list[torch.Tensor]]:
    """The recorded stage outputs, one list per forward, and the record emptied."""
    kept, n = getattr(backbone, "stage_outputs", None), getattr(backbone, "n_feature_stages", 0)
    if not kept:
        raise ValueError("regularizers.layer_vc / layer_redundancy / norm_preservation: no stage outputs were "
                         "recorded (record_stage_outputs was not called on this backbone)")
    backbone.stage_outputs = []
    return [kept[i:i + n] for i in range(0, len(kept), n)]


# The anchor term's snapshot of each model: (step taken, frozen copy of backbone and projector). Kept
# beside the model, not in it, so it is neither optimised nor saved (a resumed run retakes it).
_SNAPSHOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def anchor_embeddings(model: nn.Module, x: torch.Tensor, on: str, every: int, step: int) -> torch.Tensor:
    """The embedding of `x` under a snapshot of the model taken at most `every` steps ago."""
    taken = _SNAPSHOTS.get(model)
    if taken is None or not 0 <= step - taken[0] < every:
        backbone = model.backbone
        # recorded graphs (a ViT's attention, layer_vc's stage outputs) do not deepcopy: set aside
        kept = {k: getattr(backbone, k) for k in ("internals", "stage_outputs") if getattr(backbone, k, None)}
        for k in kept:
            setattr(backbone, k, [])
        parts = {"backbone": copy.deepcopy(backbone)}
        for k, v in kept.items():
            setattr(backbone, k, v)
        if on == "projector":
            parts["projector"] = copy.deepcopy(model.projector)
        taken = _SNAPSHOTS[model] = (step, nn.ModuleDict(parts).requires_grad_(False))
    snapshot = taken[1].train(model.training)
    h = snapshot["backbone"](x)
    return snapshot["projector"](h) if "projector" in snapshot else h


def _branch(out: MethodOutput, name: str, term: str) -> tuple[torch.Tensor, ...]:
    if name in out.embeddings:
        return out.embeddings[name]
    if "encoder" in out.embeddings:  # a method without a projector (MAE): fall back to the encoder
        return out.embeddings["encoder"]
    raise ValueError(f"regularizers.{term}.on={name}: this method exposes no {name} embeddings")


def apply_regularizers(model: nn.Module, views: list[torch.Tensor], out: MethodOutput,
                       cfg: RegularizersConfig, step: int = 0) -> MethodOutput:
    """`out` with the weighted active terms added to its loss and each term (unweighted) in `terms`
    under `reg_<name>`. Terms over two views average the views; `step` drives each weight's ramp."""
    active = cfg.active()
    if not active:
        return out
    loss, terms = out.loss, dict(out.terms)
    parts = dict(out.parts) or {"method": out.loss}
    recorded = []
    if cfg.needs_internals():
        # (attention maps per block, final tokens) of each training forward since the last step
        recorded = getattr(model.backbone, "internals", None) or []
        if not recorded:
            raise ValueError(f"regularizers {', '.join(n for n in active if n in TOKEN_TERMS)} act on attention "
                             "and tokens: they need the vit backbone with keep_internals set (model=vit_tiny)")
        model.backbone.internals = []
    stage_outputs = _take_stage_outputs(model.backbone) if cfg.needs_stage_outputs() else []

    def per_view(fn, zs):
        return sum(fn(z) for z in zs) / len(zs)

    for name in active:
        c = getattr(cfg, name)
        if name == "orthogonality":
            heads = [m for m in (getattr(model, "projector", None), getattr(model, "predictor", None)) if m is not None]
            ws = [mod.weight for h in heads for mod in h.modules() if isinstance(mod, nn.Linear)]
            value = orthogonality_loss(ws)
        elif name == "filter_diversity":
            value = filter_similarity_loss([m.weight for m in model.backbone.modules()
                                            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[0] > 1])
        elif name in AUX_TERMS:
            heads = getattr(model, "aux_heads", None)
            if heads is None or name not in heads:
                raise ValueError(f"regularizers.{name} needs its head: build the model with build_aux_heads")
            x = views[0]
            if name == "rotation":   # one more forward, of the first view turned by a random quarter each
                k = torch.randint(4, (x.shape[0],), device=x.device)
                value = rotation_loss(heads["rotation"](model.backbone(rotate_quarters(x, k))), k)
            elif name == "position":  # one more forward of the first view, every patch, in position order
                vit = model.backbone
                value = position_loss(heads["position"](vit.forward_tokens(vit.patchify_embed(x))[:, 1:]))
            else:                    # from the features the method already computed for the first view
                h = out.embeddings["encoder"][0]
                value = reconstruction_loss(heads["reconstruction"](h), x, c.size)
        elif name == "layer_vc":
            value = per_view(lambda feats: layerwise_vc_loss(feats, c.gamma, c.cov_ratio), stage_outputs)
        elif name == "layer_redundancy":
            value = per_view(layer_redundancy_loss, stage_outputs)
        elif name == "norm_preservation":   # the intermediate stages, then the encoder's output, per forward
            pairs = list(zip(stage_outputs, out.embeddings["encoder"]))
            value = sum(norm_preservation_loss([*s, h]) for s, h in pairs) / len(pairs)
        elif name in TOKEN_TERMS:
            term = {"token_similarity": lambda maps, tok: token_similarity_loss(tok),
                    "head_diversity": lambda maps, tok: head_diversity_loss(maps),
                    "attention_entropy": lambda maps, tok: attention_entropy_loss(maps, c.target)}[name]
            value = sum(term(maps, tok) for maps, tok in recorded) / len(recorded)
        else:
            zs = _branch(out, c.on, name)
            if name == "variance":
                value = per_view(lambda z: variance_term(z.float(), c.gamma), zs)
            elif name == "covariance":
                value = per_view(lambda z: covariance_term(z.float()), zs)
            elif name == "uniformity":
                value = per_view(lambda z: uniformity_loss(z, c.t), zs)
            elif name == "entropy":
                value = per_view(lambda z: entropy_loss(z, c.temperature), zs)
            elif name == "feature_norm":
                value = per_view(lambda z: feature_norm_loss(z, c.target), zs)
            elif name == "repulsion":
                value = per_view(repulsion_loss, zs)
            elif name in ("anchor", "view_covariance", "overalignment"):
                if len(zs) < 2:
                    raise ValueError(f"regularizers.{name} acts on the two views of a joint-embedding method "
                                     "(simclr, byol, vicreg)")
                if name == "anchor":
                    value = anchor_loss(zs[0], anchor_embeddings(model, views[0], c.on, c.every, step))
                elif name == "overalignment":
                    value = overalignment_loss(zs[0], zs[1], c.margin)
                else:
                    value = covariance_gap(zs[0], zs[1])
            else:  # consistency: one more forward pass of the first view, perturbed
                x = views[0]
                perturbed = {"noise": lambda: x + c.sigma * torch.randn_like(x),
                             "lowres": lambda: at_resolution(x, c.lowres),
                             "shuffle": lambda: shuffle_blocks(x, c.grid),
                             "shift": lambda: shifted(x, c.shift)}[c.perturbation]()
                h = model.backbone(perturbed)
                noisy = model.projector(h) if c.on == "projector" and hasattr(model, "projector") else h
                value = consistency_loss(zs[0], noisy)
        ramp = min(1.0, (step + 1) / c.ramp_steps) if c.ramp_steps else 1.0
        parts[f"reg_{name}"] = weighted = ramp * c.weight * value
        loss = loss + weighted
        terms[f"reg_{name}"] = value.detach()
    # what the consistency and rotation terms' extra forwards recorded belongs to no step's views
    if stage_outputs:
        model.backbone.stage_outputs = []
    if recorded:
        model.backbone.internals = []
    return MethodOutput(loss, terms, out.embeddings, parts)
