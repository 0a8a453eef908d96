"""The health monitor: a trainer hook that measures the run on a fixed probe buffer every `every`
steps, logs the metrics (health/..., grad/..., weights/..., act/..., loss/...), and runs the
detectors over them. It never changes training: checks run under a forked RNG, in eval mode, and
the train-mode BatchNorm check freezes running statistics."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from reference_models.augment import AugmentConfig, BatchAugment, at_resolution, shifted
from reference_models.fields import bounded
from reference_models.losses import masked_reconstruction, patchify
from reference_models.backbones.vit import VisionTransformer
from reference_models.backbones import BACKBONES
from reference_models.methods import METHODS
from reference_models.methods.mae import MAE

from . import activations, dynamics, geometry, method_metrics, optimization, stages, tokens
from .detectors import Detector, DetectorConfig, Symptom

# the activations whose outputs the metrics read: ReLU for dead units, tanh and sigmoid for saturation
# (a GELU ViT keeps none, and pays nothing for capturing them)
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Sigmoid)
ATTENTION_IMAGES = 32     # probe images whose attention maps a ViT's attention metrics read


@dataclass
class MonitorConfig:
    enabled: bool = True
    every: int = bounded(20, 1)            # steps between checks (loss, gradients, weights, method metrics)
    geometry_every: int = bounded(0, 0)    # steps between the checks that also embed the probe buffer
                                           # (geometry, activations, BatchNorm): 0 = at every check; else
                                           # a multiple of `every`. The last check of a run always does.
    probe_size: int = bounded(128, 8)      # images in the fixed probe buffer
    probe_seed: int = 1234                 # the buffer's images and views (same for a parent and its children)
    lowres_scale: float = bounded(0.5, 0.05, 1.0)  # the side's fraction of the buffer's low-resolution copy
    shift_frac: float = bounded(0.125, 0.0, 0.5)  # the side's fraction the buffer's shifted copy moves by
    noise_std: float = bounded(0.03, 0.0, 1.0)   # pixel noise (images in [0, 1]) of the buffer's perturbed copy,
                                           # read by noise_sensitivity: about 8 grey levels of 255
    loss_window: int = bounded(50, 4)      # steps over which loss dynamics are measured
    knn_every: int = bounded(100, 0)       # steps between kNN probes on the validation split (0 = off);
                                           # a multiple of `every`; overfitting is judged on these
    knn_bank: int = bounded(512, 10)       # training images in those probes' bank: a third of the cost of
                                           # the full split's (the run's own probes keep probe.max_train)
    knn_queries: int = bounded(512, 10)    # validation images those probes classify: on a large split
                                           # (CIFAR's 10,000) the queries, not the bank, would dominate
    stop_on_symptom: bool = False          # end the run at the first symptom (the remediation loop sets this)
    detectors: dict[str, DetectorConfig] = field(default_factory=dict)


class ProbeBuffer:
    """A fixed set of training images with two deterministic views made by the reference (SimCLR)
    augmentation, whatever the run's own augmentation is: a run trained without augmentation is
    measured on ordinary views, and a parent and its children on the same ones."""

    def __init__(self, images_u8: torch.Tensor, size: int, seed: int, normalize, device, noise_std: float = 0.03,
                 lowres: float = 0.5, shift: float = 0.125):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(images_u8), generator=g)[:size]
        x = images_u8[idx].to(device).float().div_(255)
        gen = torch.Generator(device).manual_seed(seed)
        aug = BatchAugment(AugmentConfig())
        self.clean = normalize(x)
        self.views = (normalize(aug(x, gen)), normalize(aug(x, gen)))
        # the same images under a small fixed noise (drawn after the views, so those stay as they were)
        noise = torch.randn(x.shape, generator=g).to(device)
        self.noisy = normalize((x + noise_std * noise).clamp_(0.0, 1.0))
        # ... and at a lower resolution (downsampled, resized back): the catalog's "fails at low resolution"
        self.lowres = normalize(at_resolution(x, lowres))
        # ... and moved by a few pixels, zeros filling the uncovered border: "shifts with padding or crops"
        self.shifted = normalize(shifted(x, shift))


@torch.no_grad()
def _embed(model, x):
    h = model.backbone(x)
    return h, (model.projector(h) if hasattr(model, "projector") else None)


def _geometry(prefix: str, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
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


def _initial_norms(model, x) -> dict[str, float]:
    """Feature norms before any training step, the scale growth is judged against. Measured in train mode
    (BatchNorm on batch statistics) on a copy: in eval mode a fresh BatchNorm's running statistics are
    still 0 and 1, which made the projector's first norm 10x too small and healthy runs 'grow' 20x."""
    clone = copy.deepcopy(model).train()
    h, z = _embed(clone, x)
    norms = {"encoder": geometry.norm_stats(h)["mean"]}
    if z is not None:
        norms["projector"] = geometry.norm_stats(z)["mean"]
    return norms


def _stage_indices(backbone, weights: list) -> list[list[int]]:
    """The backbone's stages (input first) as indices into `weights`, its parameter list: what
    depth_update_ratio compares. Empty for a backbone that names no stages."""
    if not hasattr(backbone, "stages"):
        return []
    where = {id(w): i for i, w in enumerate(weights)}
    return [[where[id(p)] for p in stage if id(p) in where] for stage in backbone.stages()]


def _distance(xs, ys) -> float:
    return math.sqrt(optimization.distance_sq(xs, ys).item())


class HealthMonitor:
    """A trainer hook (see autofix.trainer.Hook)."""

    def __init__(self, cfg: MonitorConfig, catalog_ids: dict[str, list[int]] | None = None):
        self.cfg = cfg
        self.catalog_ids = catalog_ids or {}
        self.detectors: list[Detector] = []
        self.events: list[Symptom] = []
        self.losses: list[torch.Tensor] = []
        self.grad_norms: list[torch.Tensor] = []
        self.grad_history: list[float] = []
        self._acts: list[tuple[type, torch.Tensor]] = []
        self._attn: list[dict[str, float]] = []      # per ViT block, at the capturing embedding pass
        self._tokens: torch.Tensor | None = None     # a ViT's final tokens there (N, 1 + patches, D)
        self._capture = False
        self._train_views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.best_knn, self.loss_at_best = float("-inf"), float("nan")
        self.first_loss = float("nan")     # mean loss over the first check's window: the start's loss
        self.min_loss = float("nan")       # the lowest such mean so far
        self.knn_start = float("nan")      # the probe before any step (runs from scratch only)
        self.knn_origin = float("nan")     # the same, or for a forked child its parent's: knn_gain's zero
        self._previous_encoder: torch.Tensor | None = None   # the probe's encoder embedding at the last check
        self._stage_features: list[torch.Tensor] = []       # the stages' pooled outputs at the last kNN probe
        self.stage_knn_start: list[float] | None = None     # each stage's kNN before any step
        self.last_metrics: dict[str, float] = {}
        self.embed_last_check = True        # off only where a benchmark times the embedding apart

    # ---- hook interface -------------------------------------------------------------------------
    def on_start(self, trainer) -> None:
        model = trainer.model
        self.method, self.device = trainer.cfg.method.name, trainer.device
        self.detectors = [Detector(name, d, self.catalog_ids.get(d.symptom, []))
                          for name, d in self.cfg.detectors.items() if d.symptom and d.enabled]
        self.detectors = [d for d in self.detectors if d.applies_to(self.method, trainer.cfg.model.backbone)]
        self.buffer = ProbeBuffer(trainer.data.train_x, self.cfg.probe_size, self.cfg.probe_seed,
                                  trainer.normalize, trainer.device, self.cfg.noise_std, self.cfg.lowres_scale,
                                  self.cfg.shift_frac)
        weights = [p for p in model.backbone.parameters()]
        self.initial = optimization.snapshot(weights)
        if hasattr(model, "target_backbone"):
            self.initial_online = optimization.snapshot(list(model.backbone.parameters()) +
                                                        list(model.projector.parameters()))
        self.previous = optimization.snapshot(weights)
        self.previous_head = optimization.snapshot(list(model.projector.parameters())) \
            if hasattr(model, "projector") else None
        self.stages = _stage_indices(model.backbone, weights)
        for m in model.backbone.modules():
            if isinstance(m, ACTIVATION_TYPES):
                m.register_forward_hook(self._record_activation)
        if isinstance(model.backbone, VisionTransformer):
            for block in model.backbone.blocks:
                block.qkv.register_forward_hook(self._attention_hook(block))
            model.backbone.norm.register_forward_hook(self._record_tokens)
        self.out_dir = Path(trainer.out_dir)
        self.init_norms = _initial_norms(model, self.buffer.views[0])
        if trainer.step == 0 and self.cfg.knn_every and math.isnan(self.knn_start):
            self.knn_start = self.knn_origin = self._knn(trainer)
            self._stage_metrics(trainer)   # keeps the stages' probe at the start

    def _knn(self, trainer) -> float:
        """The monitor's kNN probe. The stages' pooled outputs of the same forwards are kept for the
        layer-wise metrics (`_stage_metrics`)."""
        with stages.StageRecorder(trainer.model.backbone) as rec:
            knn = trainer.probe(max_train=self.cfg.knn_bank, max_val=self.cfg.knn_queries)["probe/knn"]
        self._stage_features = rec.features()
        return knn

    def _stage_metrics(self, trainer) -> dict[str, float]:
        feats = self._stage_features
        if len(feats) < 2:
            return {}
        _, bank_y, _, val_y = trainer.probe_split(self.cfg.knn_bank, self.cfg.knn_queries)
        p = trainer.cfg.probe
        knn = stages.stage_knn(feats, len(bank_y), bank_y.to(feats[0].device), val_y.to(feats[0].device),
                               p.knn_k, p.knn_temperature, trainer.data.num_classes)
        if self.stage_knn_start is None and trainer.step == 0:
            self.stage_knn_start = knn
        # CKA on the bank's rows only: the queries are another split, and 512 rows are plenty
        bank = [f[:len(bank_y)] for f in feats]
        return stages.stage_metrics(bank, knn, self.stage_knn_start)

    def after_step(self, trainer, out) -> None:
        self.losses.append(out.loss.detach().float())
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        if grads:
            self.grad_norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        if trainer.step % self.cfg.every == 0:
            self._train_views = {k: v for k, v in out.embeddings.items() if len(v) == 2}
            self.check(trainer)

    def on_end(self, trainer) -> None:
        if trainer.step % self.cfg.every:
            self.check(trainer)

    def _geometry_due(self, step: int) -> bool:
        return not self.cfg.geometry_every or step % self.cfg.geometry_every == 0

    # ---- a check --------------------------------------------------------------------------------
    def check(self, trainer) -> None:
        # the run's last check embeds whatever the cadence: its verdict (a child's "resolved") reads all
        geometry = self._geometry_due(trainer.step) or (self.embed_last_check and trainer.step >= trainer.last_step)
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            metrics = self.measure(trainer, geometry=geometry)
        trainer.log(metrics)
        self.last_metrics = metrics
        for det in self.detectors:
            symptom = det.check(trainer.step, metrics, trainer.step / trainer.cfg.trainer.max_steps)
            if symptom is not None:
                self.emit(trainer, symptom)

    def measure(self, trainer, geometry: bool = True) -> dict[str, float]:
        """One check's metrics. Without `geometry` the probe buffer is not embedded: the detectors that
        read embedding metrics skip that check (their persistence counts the checks that have them)."""
        model = trainer.model
        m: dict[str, float] = {}
        # loss and gradients over the window since the last check
        window = torch.stack(self.losses[-self.cfg.loss_window:]).tolist() if self.losses else []
        recent = self.losses[-self.cfg.every:]
        m["train/nonfinite_loss"] = float(sum(not math.isfinite(v) for v in torch.stack(recent).tolist())) \
            if recent else 0.0
        if window and math.isnan(self.first_loss):
            first = window[-self.cfg.every:]
            self.first_loss = sum(first) / len(first)
        m.update(self._loss_level(recent))
        m["loss/rel_improvement"] = dynamics.relative_improvement(window)
        m["loss/spike_score"] = dynamics.robust_spike_score(window)
        m["loss/oscillation"] = dynamics.oscillation(window)
        if self.grad_norms:
            gn = torch.stack(self.grad_norms[-self.cfg.every:]).tolist()
            # the running median over the last 1000 steps: long runs must not pay for their whole past
            self.grad_history = (self.grad_history + gn)[-1000:]
            median = float(torch.tensor(self.grad_history).nanmedian())
            m["grad/norm"] = gn[-1]
            m["grad/max_over_median"] = max(gn) / median if median > 0 else float("nan")
        self.losses = self.losses[-self.cfg.loss_window:]
        self.grad_norms = []
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

        was_training = model.training
        model.eval()
        if isinstance(model, MAE):
            m.update(self._mae_metrics(model, trainer))
        if geometry:
            m.update(self._embedding_metrics(model, trainer))
        else:
            self._train_views = {}
        if self.cfg.knn_every and trainer.step % self.cfg.knn_every == 0:
            m.update(self._knn_metrics(trainer, window))
            # at the kNN probe's cadence: two small forward passes, read by no detector that needs them often
            m.update(self._perturbation_sensitivity(model))
            m.update(self._stage_metrics(trainer))
        model.train(was_training)
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

    def _embedding_metrics(self, model, trainer) -> dict[str, float]:
        """Everything read from the probe buffer's two views: geometry of each branch, activations,
        the method's embedding metrics and BatchNorm's batch dependence."""
        m: dict[str, float] = {}
        v1, v2 = self.buffer.views
        self._acts, self._attn, self._tokens, self._capture = [], [], None, True
        h1, z1 = _embed(model, v1)
        self._capture = False
        m.update(self._transformer_metrics())
        if isinstance(model.backbone, VisionTransformer):
            m.update(self._position_metrics(model.backbone))
        h2, z2 = _embed(model, v2)
        # Geometry on host copies: on a GPU its small SVDs and some forty scalar reads each cost a
        # device round trip, while 128 rows of a few hundred numbers take a CPU core milliseconds.
        h1_host = h1.cpu()
        m.update(_geometry("health/encoder", h1_host, h2.cpu()))
        # how much the probe images' neighbourhoods changed since the last embedding check: the
        # catalog's "representations drift between epochs" (not kept across a resume: NaN once after it)
        if self._previous_encoder is not None:
            m["health/encoder/neighbour_overlap"] = geometry.neighbour_overlap(self._previous_encoder, h1_host)
            # ... and how far the embeddings themselves moved: a rotation or a shift of the whole space
            # keeps every neighbourhood, yet a probe or a downstream head fitted before it is lost
            m["health/encoder/displacement"] = geometry.relative_displacement(self._previous_encoder, h1_host)
        self._previous_encoder = h1_host
        if z1 is not None:
            m.update(_geometry("health/projector", z1.cpu(), z2.cpu()))
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
        # Views of the training batch against views of the reference augmentation: a large gap means the
        # run's own views are far easier to match than standard ones (the pretext task is too easy).
        for branch, key in (("encoder", "encoder"), ("projector", "projector")):
            if key in self._train_views and f"health/{branch}/positive_cos" in m:
                a, b = self._train_views[key]
                train_pos = geometry.pair_cosines(a.detach().cpu(), b.detach().cpu())["positive"]
                m[f"health/{branch}/train_positive_cos"] = train_pos
                m[f"health/{branch}/augment_gap"] = train_pos - m[f"health/{branch}/positive_cos"]
        self._train_views = {}
        self._acts = [(k, a.cpu()) for k, a in self._acts]   # (N, C) each: small, and read many times
        relu_like = [a for k, a in self._acts if k is nn.ReLU]
        if relu_like:
            dead = [activations.dead_fraction(a) for a in relu_like]
            m["act/dead_max"], m["act/dead_mean"] = max(dead), sum(dead) / len(dead)
        bounded_acts = [(a, k) for k, a in self._acts if k in (nn.Tanh, nn.Sigmoid)]
        if bounded_acts:
            sat = [activations.saturated_fraction(a, "tanh" if k is nn.Tanh else "sigmoid") for a, k in bounded_acts]
            m["act/saturated_mean"] = sum(sat) / len(sat)
        m.update(self._method_metrics(model, trainer, v1, z1, z2))
        m.update(self._batchnorm_metrics(model, trainer.cfg.trainer.batch_size, h1, z1))
        return m

    def _perturbation_sensitivity(self, model) -> dict[str, float]:
        """How far the buffer's noisy, low-resolution and shifted copies move its images' embeddings (the
        clean images embedded once for all three)."""
        clean = _embed(model, self.buffer.clean)[0].cpu()
        copies = (("noise", self.buffer.noisy), ("resolution", self.buffer.lowres), ("shift", self.buffer.shifted))
        return {f"health/encoder/{name}_sensitivity":
                geometry.perturbation_sensitivity(clean, _embed(model, copy)[0].cpu()) for name, copy in copies}

    def _knn_metrics(self, trainer, window: list[float]) -> dict[str, float]:
        """The probe falling from its best while the loss still improves is overfitting."""
        recent_losses = window[-self.cfg.every:]
        knn = self._knn(trainer)
        loss = sum(recent_losses) / max(len(recent_losses), 1)
        if self.best_knn == float("-inf") and not math.isnan(self.knn_start):
            # a run from scratch is also judged against its starting point: a shortcut can pull the
            # probe down before the first check
            self.best_knn, self.loss_at_best = self.knn_start, self.first_loss
        if knn > self.best_knn:
            self.best_knn, self.loss_at_best = knn, loss
        # health/knn: the monitor's cheaper probe (its own bank); probe/knn is the run's full probe.
        # loss_gain_since_best: the share of the loss removed since the best probe, > 0 while the
        # pretext task still improves
        # knn_gain: against the untrained encoder (NaN for a run that neither started at step 0 nor
        # inherited its parent's start): below 0, training destroyed more than it taught
        return {"health/knn": knn, "health/knn_drop": self.best_knn - knn,
                "health/knn_gain": knn - self.knn_origin,
                "health/loss_gain_since_best": (self.loss_at_best - loss) / abs(self.loss_at_best or 1.0)}

    def _method_metrics(self, model, trainer, v1, z1, z2) -> dict[str, float]:
        m: dict[str, float] = {}
        name = trainer.cfg.method.name
        if name == "simclr":
            m["simclr/neg_entropy"] = method_metrics.contrastive_entropy(z1.cpu(), z2.cpu(),
                                                                          trainer.cfg.method.temperature)
        if name == "byol":
            with torch.no_grad():
                t1 = model.target_projector(model.target_backbone(v1))
            m["byol/online_target_norm_ratio"] = geometry.norm_ratio(z1, t1)
            m["byol/online_target_cos"] = torch.nn.functional.cosine_similarity(z1, t1, dim=1).mean().item()
            online = list(model.backbone.parameters()) + list(model.projector.parameters())
            target = list(model.target_backbone.parameters()) + list(model.target_projector.parameters())
            m["byol/ema_distance"] = method_metrics.ema_param_distance(online, target)
            # How far the target trails the online network, as a share of how far the online network has
            # moved since init: about 1 when the target is frozen at init, small when it tracks.
            moved = _distance(online, self.initial_online)
            lag = _distance(online, target)
            m["byol/target_lag"] = lag / moved if moved > 0 else float("nan")
        return m

    @torch.no_grad()
    def _mae_metrics(self, model: MAE, trainer) -> dict[str, float]:
        """Masked loss at the run's ratio vs interpolating visible neighbours, and the cross-ratio
        check: the loss at the standard 0.75 over the loss at the run's own ratio (FINDINGS: only this
        separated a too-easy mask from a healthy one in short runs)."""
        x, ratio, p = self.buffer.clean, model.cfg.mask_ratio, model.backbone.patch_size
        target = patchify(x, p)
        torch.manual_seed(self.cfg.probe_seed)  # inside fork_rng: the same masks at every check
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
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(self.cfg.probe_seed)).to(x.device)
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

    def _record_activation(self, module, inputs, output) -> None:
        if self._capture:
            out = output.detach()
            if isinstance(module, nn.ReLU) and out.dim() > 2:
                # a channel is silent for a sample when its max over positions is 0: keep (N, C) only
                out = out.flatten(2).amax(dim=2)
            self._acts.append((type(module), out))

    def _attention_hook(self, block):
        def record(module, inputs, output) -> None:
            # reduced here, block by block: a ViT on 224 px images has 197 x 197 maps per head
            if self._capture:
                # 32 images' maps (over 2,000 rows per head) are plenty, and a 128-image softmax over
                # every block would cost more than the rest of the embedding pass
                q, k, _ = block.split_heads(output.detach()[:ATTENTION_IMAGES].float())
                attn = tokens.attention_probs(q, k, block.scale)
                self._attn.append({"entropy": tokens.attention_entropy(attn), "max": tokens.attention_max(attn),
                                   "redundancy": tokens.head_redundancy(attn),
                                   "static": tokens.attention_static_share(attn)})
        return record

    def _record_tokens(self, module, inputs, output) -> None:
        if self._capture and output.dim() == 3:
            self._tokens = output.detach()

    @torch.no_grad()
    def _position_metrics(self, vit: VisionTransformer) -> dict[str, float]:
        """How much of the final patch tokens is position, and whether position can be read from them at
        all: the probe images with their patches shuffled (each image's own order, fixed by the probe
        seed; shuffling patch embeddings is shuffling the image's patches), then the positions added back
        in the usual order."""
        x = self.buffer.clean[:ATTENTION_IMAGES]
        content = vit.patch_embed(x).flatten(2).transpose(1, 2)
        g = torch.Generator(device=x.device).manual_seed(self.cfg.probe_seed)
        order = torch.rand(content.shape[:2], generator=g, device=x.device).argsort(dim=1)
        shuffled = content.gather(1, order.unsqueeze(-1).expand_as(content))
        out = vit.forward_tokens(shuffled + vit.pos_embed)[:, 1:].cpu()
        return {"tokens/position_share": tokens.position_share(out),
                "tokens/position_decodable": tokens.position_decodability(out)}

    def _transformer_metrics(self) -> dict[str, float]:
        """A ViT's attention (mean over blocks, its most uniform and its sharpest block) and patch-token similarity
        on the first probe view; nothing for other backbones."""
        m: dict[str, float] = {}
        if self._attn:
            mean = lambda key: sum(a[key] for a in self._attn) / len(self._attn)
            m["attn/entropy"], m["attn/max_weight"] = mean("entropy"), mean("max")
            m["attn/entropy_max_block"] = max(a["entropy"] for a in self._attn)
            m["attn/entropy_min_block"] = min(a["entropy"] for a in self._attn)
            m["attn/head_redundancy"] = mean("redundancy")
            # how alike different images' maps are: the catalog's "attention maps static across inputs"
            # (every block) and "early heads learn only positional identity" (the first block)
            static = [a["static"] for a in self._attn]
            known = [v for v in static if not math.isnan(v)]   # NaN: a block of uniform maps
            m["attn/static_max_block"] = max(known) if known else float("nan")
            m["attn/static_first_block"], m["attn/static_mean"] = static[0], sum(static) / len(static)
        if self._tokens is not None:
            m["tokens/patch_similarity"] = tokens.token_similarity(self._tokens[:, 1:].cpu())
        self._attn, self._tokens = [], None
        return m

    def state(self, symptom: str) -> tuple[bool, float]:
        """Whether `symptom`'s condition held at the latest check (any of its detectors), and how badly."""
        dets = [d for d in self.detectors if d.cfg.symptom == symptom]
        return (any(bool(d.last_hit) for d in dets), max((d.last_severity for d in dets if d.last_hit), default=0.0))

    def judged(self, symptom: str) -> bool:
        """Whether any of `symptom`'s detectors has judged a check yet (past its warm-up, its metrics
        measured): a child too short for that cannot count the symptom as resolved."""
        return any(d.last_hit is not None for d in self.detectors if d.cfg.symptom == symptom)

    def healthy(self) -> bool:
        """No detector's condition held at the latest check."""
        return not any(d.last_hit for d in self.detectors)

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Saved with each checkpoint, so that a resumed run (a requeued SLURM child, a killed parent)
        judges its next checks against the same baselines, windows and streaks as before the stop."""
        return {"initial": self.initial, "initial_online": getattr(self, "initial_online", None),
                "previous": self.previous, "previous_head": self.previous_head, "init_norms": dict(self.init_norms),
                "losses": [float(v) for v in self.losses], "grad_norms": [float(v) for v in self.grad_norms],
                "grad_history": list(self.grad_history), "best_knn": self.best_knn,
                "loss_at_best": self.loss_at_best, "first_loss": self.first_loss, "min_loss": self.min_loss,
                "knn_start": self.knn_start, "knn_origin": self.knn_origin, "last_metrics": dict(self.last_metrics),
                "stage_knn_start": self.stage_knn_start,
                "events": [asdict(e) for e in self.events],
                "detectors": {d.name: d.state_dict() for d in self.detectors}}

    def load_state_dict(self, state: dict) -> None:
        """Called after on_start (which built the detectors and the probe buffer)."""
        dev = self.device  # checkpoints load onto the CPU
        self.initial, self.previous = [t.to(dev) for t in state["initial"]], [t.to(dev) for t in state["previous"]]
        if state.get("previous_head") is not None and self.previous_head is not None:
            self.previous_head = [t.to(dev) for t in state["previous_head"]]
        if state.get("initial_online") is not None:
            self.initial_online = [t.to(dev) for t in state["initial_online"]]
        self.init_norms = dict(state["init_norms"])
        self.losses = [torch.tensor(v, device=dev) for v in state["losses"]]
        self.grad_norms = [torch.tensor(v, device=dev) for v in state["grad_norms"]]
        self.grad_history, self.best_knn = list(state["grad_history"]), state["best_knn"]
        self.loss_at_best, self.last_metrics = state["loss_at_best"], dict(state["last_metrics"])
        self.first_loss = state.get("first_loss", float("nan"))
        self.min_loss = state.get("min_loss", float("nan"))
        self.knn_start = state.get("knn_start", float("nan"))
        self.knn_origin = state.get("knn_origin", self.knn_start)
        self.stage_knn_start = state.get("stage_knn_start")
        self.events = [Symptom(**e) for e in state["events"]]
        fired = {e.detector: e for e in self.events}
        for d in self.detectors:
            if d.name in state["detectors"]:
                d.load_state_dict(state["detectors"][d.name], fired.get(d.name))

    def inherit(self, parent_state: dict) -> None:
        """A forked child keeps its parent's probe of the untrained encoder: "worse than at the start"
        means the run's start, not the fork's; so does BYOL's online network at init (everything else,
        the overfitting detector's best probe included, restarts at the fork)."""
        if math.isnan(self.knn_origin):
            self.knn_origin = parent_state.get("knn_origin", parent_state.get("knn_start", float("nan")))
        if self.stage_knn_start is None:
            self.stage_knn_start = parent_state.get("stage_knn_start")
        # BYOL's target lag divides the online-target distance, built up over the parent's whole run, by
        # how far the online network moved: from the run's init, not from the fork (else a healthy child
        # reads as a frozen target). Kept from the fork when a patch changed the shapes.
        mine, theirs = getattr(self, "initial_online", None), parent_state.get("initial_online")
        if mine is not None and theirs is not None and [t.shape for t in mine] == [t.shape for t in theirs]:
            self.initial_online = [t.to(mine[0].device) for t in theirs]

    # ---- events ---------------------------------------------------------------------------------
    def emit(self, trainer, symptom: Symptom) -> None:
        from ..progress import console

        self.events.append(symptom)
        worst = max(symptom.evidence.items(), key=lambda kv: kv[1]["severity"])
        console.print(f"[bold red]symptom[/] {symptom.id} at step {symptom.step} (onset {symptom.onset}, "
                      f"severity {symptom.severity:.2f}): {worst[0]} = {worst[1]['value']:.4g} "
                      f"{worst[1]['op']} {worst[1]['threshold']:.4g}; catalog {_some(symptom.catalog_ids)}")
        trainer.tracker.set_tags({f"autofix.symptom.{symptom.id}": str(symptom.step)})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "symptoms.jsonl"
        with path.open("a") as f:
            f.write(json.dumps(asdict(symptom)) + "\n")
        trainer.tracker.log_artifact(path)
        if self.cfg.stop_on_symptom:
            trainer.should_stop = True


def _some(ids: list[int], n: int = 8) -> str:
    return ", ".join(map(str, ids[:n])) + (f" ... ({len(ids)} entries)" if len(ids) > n else "")


def build_monitor(cfg: MonitorConfig) -> list:
    """The hooks a run gets from its monitor config: none when disabled (zero cost), else one monitor
    whose detectors are checked against the symptom list."""
    if not cfg.enabled:
        return []
    from ..errors import ConfigError
    from ..symptoms import catalog_ids

    ids = catalog_ids()
    if cfg.geometry_every % cfg.every:
        raise ConfigError(f"monitor.geometry_every: {cfg.geometry_every} is not a multiple of monitor.every "
                          f"({cfg.every}); valid: 0 (every check) or a multiple of {cfg.every}")
    if cfg.knn_every % cfg.every:
        raise ConfigError(f"monitor.knn_every: {cfg.knn_every} is not a multiple of monitor.every ({cfg.every}); "
                          f"valid: 0 (off) or a multiple of {cfg.every}")
    for name, d in cfg.detectors.items():
        if d.symptom not in ids:
            raise ConfigError(f"monitor.detectors.{name}.symptom: {d.symptom!r} is not a symptom; "
                              f"valid: {', '.join(ids)}")
        for key, valid in (("methods", METHODS), ("backbones", BACKBONES)):
            bad = [v for v in getattr(d, key) if v not in valid]
            if bad:
                raise ConfigError(f"monitor.detectors.{name}.{key}: {', '.join(map(repr, bad))} unknown; "
                                  f"valid: {', '.join(valid)}")
    return [HealthMonitor(cfg, ids)]
