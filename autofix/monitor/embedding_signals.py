"""The monitor's metric group for what the network makes of the probe buffer: the geometry of each
branch's embedding, activations and a ViT's attention (through `Capture`), the method's own signals,
BatchNorm's dependence on the batch, and how far perturbed copies of the images move their embeddings."""
from __future__ import annotations

import math

import torch
from torch import nn

from reference_models.backbones.vit import VisionTransformer
from reference_models.losses import masked_reconstruction, patchify
from reference_models.methods.mae import MAE

from . import activations, geometry, method_metrics, optimization, tokens
from .buffer import ProbeBuffer, embed, initial_norms
from .capture import ATTENTION_IMAGES, Capture


def branch_geometry(prefix: str, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Embedding geometry of one branch from its two probe views."""
    d, rank = a.shape[1], geometry.effective_rank(a)
    out = {
        f"{prefix}/rank": rank,
        f"{prefix}/rank_frac": rank / min(a.shape),
        # std of l2-normalised embeddings times sqrt(D): about 1 when spread, 0 when collapsed
        f"{prefix}/std_sqrt_d": geometry.normalized_std(a) * math.sqrt(d),
        f"{prefix}/pairwise_cos": geometry.mean_pairwise_cosine(a),
        f"{prefix}/alignment": geometry.alignment(a, b),
        f"{prefix}/uniformity": geometry.uniformity(a),
        f"{prefix}/view_norm_ratio": geometry.norm_ratio(a, b),
    }
    out.update({f"{prefix}/{k}_cos" if k != "gap" else f"{prefix}/cos_gap": v
                for k, v in geometry.pair_cosines(a, b).items()})
    out.update({f"{prefix}/{k}": v for k, v in geometry.correlation_stats(a).items()})
    out.update({f"{prefix}/norm_{k}": v for k, v in geometry.norm_stats(a).items()})
    out[f"{prefix}/raw_std"] = a.float().std(dim=0).mean().item()
    spec = geometry.spectrum(a)
    out[f"{prefix}/top5_explained"] = spec.get("top5_explained", float("nan"))
    return out


def _distance(xs, ys) -> float:
    return math.sqrt(optimization.distance_sq(xs, ys).item())


def _online(model) -> list:
    return list(model.backbone.parameters()) + list(model.projector.parameters())


class EmbeddingSignals:
    def __init__(self, buffer: ProbeBuffer, model, probe_seed: int):
        self.buffer, self.probe_seed = buffer, probe_seed
        self.init_norms = initial_norms(model, buffer.views[0])   # on a copy: before the hooks are attached
        self.capture = Capture(model.backbone)
        # BYOL's online network at init: the target's lag is judged against how far it moved since
        self.initial_online = optimization.snapshot(_online(model)) if hasattr(model, "target_backbone") else None
        self.previous_encoder: torch.Tensor | None = None   # the encoder embedding at the last embedding check
        self.previous_step = 0                               # ... and its step
        self.train_views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def note_training_views(self, out) -> None:
        """The training batch's own two views at a check, compared with the reference views."""
        self.train_views = {k: v for k, v in out.embeddings.items() if len(v) == 2}

    def measure(self, model, method: str, method_cfg, batch_size: int, step: int) -> dict[str, float]:
        """Everything read from the probe buffer's two views: geometry of each branch, activations,
        the method's embedding metrics and BatchNorm's batch dependence."""
        m: dict[str, float] = {}
        v1, v2 = self.buffer.views
        with self.capture.recording():
            h1, z1 = embed(model, v1)
        m.update(self.capture.transformer_metrics())
        if isinstance(model.backbone, VisionTransformer):
            m.update(self._position_metrics(model.backbone))
        h2, z2 = embed(model, v2)
        # Geometry on host copies: on a GPU its small SVDs and some forty scalar reads each cost a
        # device round trip, while 128 rows of a few hundred numbers take a CPU core milliseconds.
        h1_host = h1.cpu()
        m.update(branch_geometry("health/encoder", h1_host, h2.cpu()))
        # how much the probe images' neighbourhoods changed since the last embedding check: the
        # catalog's "representations drift between epochs" (not kept across a resume: NaN once after it)
        if self.previous_encoder is not None:
            m["health/encoder/neighbour_overlap"] = geometry.neighbour_overlap(self.previous_encoder, h1_host)
            # ... and how far the embeddings themselves moved: a rotation or a shift of the whole space
            # keeps every neighbourhood, yet a probe or a downstream head fitted before it is lost. As a
            # rate per 100 steps: the squared movement of noisy SGD grows with the steps between the two
            # embeddings, so a run's last check (fewer steps after the one before) or another cadence
            # would otherwise read as less movement
            moved = geometry.relative_displacement(self.previous_encoder, h1_host)
            m["health/encoder/displacement"] = moved * 100 / max(step - self.previous_step, 1)
        self.previous_encoder, self.previous_step = h1_host, step
        if z1 is not None:
            m.update(branch_geometry("health/projector", z1.cpu(), z2.cpu()))
            # the directions the projector's output spans against the encoder's: far below 1 when the head
            # is a bottleneck that throws away what the encoder learned (healthy heads expand: 0.9-2.3)
            enc = m["health/encoder/rank"]
            m["health/projector/rank_vs_encoder"] = m["health/projector/rank"] / enc if enc > 0 else float("nan")
            # how much the head transforms: near 1 when its output is a rotation of its input (an identity-
            # like head, the catalog's "projector memorises the identity"), low when it remaps the space
            m["health/projector/encoder_cka"] = geometry.linear_cka(h1_host, z1.cpu())
        for branch, init in self.init_norms.items():
            now = m.get(f"health/{branch}/norm_mean", float("nan"))
            m[f"health/{branch}/norm_growth"] = now / init if init > 0 else float("nan")
        m.update(self._augment_gap(m))
        m.update(self.capture.activation_metrics())
        m.update(self._method_metrics(model, method, method_cfg, v1, z1, z2))
        m.update(self._batchnorm_metrics(model, batch_size, h1, z1))
        return m

    def _augment_gap(self, m: dict[str, float]) -> dict[str, float]:
        """Views of the training batch against views of the reference augmentation: a large gap means the
        run's own views are far easier to match than standard ones (the pretext task is too easy)."""
        out = {}
        for branch in ("encoder", "projector"):
            if branch in self.train_views and f"health/{branch}/positive_cos" in m:
                a, b = self.train_views[branch]
                train_pos = geometry.pair_cosines(a.detach().cpu(), b.detach().cpu())["positive"]
                out[f"health/{branch}/train_positive_cos"] = train_pos
                out[f"health/{branch}/augment_gap"] = train_pos - m[f"health/{branch}/positive_cos"]
        self.train_views = {}
        return out

    def perturbation_sensitivity(self, model) -> dict[str, float]:
        """How far the buffer's noisy, low-resolution and shifted copies move its images' embeddings (the
        clean images embedded once for all three)."""
        clean = embed(model, self.buffer.clean)[0].cpu()
        copies = (("noise", self.buffer.noisy), ("resolution", self.buffer.lowres), ("shift", self.buffer.shifted))
        return {f"health/encoder/{name}_sensitivity":
                geometry.perturbation_sensitivity(clean, embed(model, copy)[0].cpu()) for name, copy in copies}

    def _method_metrics(self, model, method: str, method_cfg, v1, z1, z2) -> dict[str, float]:
        m: dict[str, float] = {}
        if method == "simclr":
            m["simclr/neg_entropy"] = method_metrics.contrastive_entropy(z1.cpu(), z2.cpu(), method_cfg.temperature)
        if method == "byol":
            with torch.no_grad():
                t1 = model.target_projector(model.target_backbone(v1))
            m["byol/online_target_norm_ratio"] = geometry.norm_ratio(z1, t1)
            m["byol/online_target_cos"] = torch.nn.functional.cosine_similarity(z1, t1, dim=1).mean().item()
            online = _online(model)
            target = list(model.target_backbone.parameters()) + list(model.target_projector.parameters())
            m["byol/ema_distance"] = method_metrics.ema_param_distance(online, target)
            # How far the target trails the online network, as a share of how far the online network has
            # moved since init: about 1 when the target is frozen at init, small when it tracks.
            moved = _distance(online, self.initial_online)
            lag = _distance(online, target)
            m["byol/target_lag"] = lag / moved if moved > 0 else float("nan")
        return m

    @torch.no_grad()
    def mae_metrics(self, model: MAE) -> dict[str, float]:
        """Masked loss at the run's ratio vs interpolating visible neighbours, and the cross-ratio
        check: the loss at the standard 0.75 over the loss at the run's own ratio (FINDINGS: only this
        separated a too-easy mask from a healthy one in short runs)."""
        x, ratio, p = self.buffer.clean, model.cfg.mask_ratio, model.backbone.patch_size
        target = patchify(x, p)
        torch.manual_seed(self.probe_seed)  # inside fork_rng: the same masks at every check
        pred, mask, _ = model.reconstruct(x, ratio)
        own = masked_reconstruction(pred, target, mask, model.cfg.norm_pix_loss).item()
        interp = method_metrics.neighbour_interpolation_loss(x, p, mask, model.cfg.norm_pix_loss)
        std = own
        if ratio != 0.75:  # at the standard ratio the cross-ratio is 1 by definition: skip a second pass
            pred75, mask75, _ = model.reconstruct(x, 0.75)
            std = masked_reconstruction(pred75, target, mask75, model.cfg.norm_pix_loss).item()
        return {"mae/loss_over_interp": own / interp if interp else float("nan"),
                "mae/cross_ratio": std / own if own else float("nan")}

    @torch.no_grad()
    def _batchnorm_metrics(self, model, batch_size: int, eval_h, eval_z) -> dict[str, float]:
        """BatchNorm health at the training batch size, through the projector where there is one (its
        BatchNorm1d suffers most from small batches). `bn/train_eval_cos`: the same images in train mode
        vs eval mode. `bn/batch_consistency`: the same images in train mode inside two different random
        groupings of that size; far below 1 means an image's embedding depends on its batch mates.
        Momentum is 0 meanwhile, so running statistics do not move."""
        nets = [model.backbone] + ([model.projector] if eval_z is not None else [])
        net = nn.Sequential(*nets)
        eval_h = eval_z if eval_z is not None else eval_h
        bns = [mod for mod in net.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
        x, n = self.buffer.views[0], len(self.buffer.views[0])
        b = min(batch_size, n)
        if not bns or b == n:
            # one training batch holds the whole buffer: no other grouping to compare with, and the
            # batch statistics of that many images are not the small-batch problem this looks for
            return {"bn/batch_consistency": 1.0}
        saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
        for bn in bns:
            bn.momentum = 0.0
        net.train()
        m = (n // b) * b
        xs = x[:m]
        in_order = torch.cat([net(xs[i:i + b]) for i in range(0, m, b)])
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(self.probe_seed)).to(x.device)
        out = torch.cat([net(xs[perm[i:i + b]]) for i in range(0, m, b)])
        regrouped = torch.empty_like(out)
        regrouped[perm] = out
        consistency = activations.train_eval_cosine(in_order, regrouped)
        net.eval()
        for bn, momentum, tracked in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
        return {"bn/train_eval_cos": activations.train_eval_cosine(in_order, eval_h[:m]),
                "bn/batch_consistency": consistency}

    @torch.no_grad()
    def _position_metrics(self, vit: VisionTransformer) -> dict[str, float]:
        """How much of the final patch tokens is position, and whether position can be read from them at
        all: the probe images with their patches shuffled (each image's own order, fixed by the probe
        seed; shuffling patch embeddings is shuffling the image's patches), then the positions added back
        in the usual order."""
        x = self.buffer.clean[:ATTENTION_IMAGES]
        content = vit.patch_embed(x).flatten(2).transpose(1, 2)
        g = torch.Generator(device=x.device).manual_seed(self.probe_seed)
        order = torch.rand(content.shape[:2], generator=g, device=x.device).argsort(dim=1)
        shuffled = content.gather(1, order.unsqueeze(-1).expand_as(content))
        out = vit.forward_tokens(shuffled + vit.pos_embed)[:, 1:].cpu()
        return {"tokens/position_share": tokens.position_share(out),
                "tokens/position_decodable": tokens.position_decodability(out)}

    def state_dict(self) -> dict:
        return {"init_norms": dict(self.init_norms), "initial_online": self.initial_online}

    def load_state_dict(self, state: dict, device) -> None:
        self.init_norms = dict(state["init_norms"])
        if state["initial_online"] is not None:
            self.initial_online = [t.to(device) for t in state["initial_online"]]

    def inherit(self, parent_state: dict) -> None:
        """BYOL's target lag divides the online-target distance, built up over the parent's whole run, by
        how far the online network moved: from the run's init, not from the fork (else a healthy child
        reads as a frozen target). Kept from the fork when a patch changed the shapes."""
        mine, theirs = self.initial_online, parent_state.get("initial_online")
        if mine is not None and theirs is not None and [t.shape for t in mine] == [t.shape for t in theirs]:
            self.initial_online = [t.to(mine[0].device) for t in theirs]
