"""The training loop: one readable loop with checkpoints, probes, tracking and a hook for monitors."""
from __future__ import annotations

import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from reference_models.data.splits import cap_indices
from reference_models.regularizers import apply_regularizers

from ..config.convert import flatten
from ..config.schema import RunConfig
from ..core.errors import ConfigError
from ..core.progress import TrainProgress
from ..monitor.probes import extract_features, knn_accuracy, linear_probe_accuracy
from . import checkpoint as ckpt
from .build import build_augment, build_model, load_data, pick_device
from .fork import fork_from, reinit_heads, reinit_prefixes
from .optim import build_optimizer, build_scheduler, set_weight_decay, surgery_backward
from .tracking import Tracker
from .views import ViewSchedule


class Hook:
    """Monitors attach here. The trainer calls these only if hooks are given, so an unused hook costs nothing."""

    def on_start(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer", out) -> None: ...

    def on_end(self, trainer: "Trainer") -> None: ...

    # A hook with state may also define state_dict() and load_state_dict(state): the state travels in
    # every checkpoint and is restored right after on_start when the run resumes. A forked child's hook
    # may define inherit(state), given the parent's state, to keep the references of the run's start.


class EpochSampler:
    """Batches of indices drawn without replacement, a fresh permutation each epoch. The permutation
    is drawn on the CPU (a reproducible generator) and kept on the data's device, so taking a batch
    costs no host-to-device copy."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm, self.pos = self._shuffle(), 0

    def _shuffle(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.generator).to(self.device)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = self._shuffle(), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"perm": self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"].to(self.device), state["pos"]


def _hook_key(index: int, hook) -> str:
    return f"{index}:{type(hook).__name__}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: str | Path, hooks: list[Hook] | tuple = (),
                 config_text: str | None = None):
        t = cfg.trainer
        self.cfg, self.out_dir, self.hooks, self.config_text = cfg, Path(out_dir), list(hooks), config_text
        # inside a SLURM job without cgroups torch sees every core of the node: take what the job was given
        t.threads = t.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed)
        self.device = pick_device(t.device)
        self.data = load_data(cfg)
        self.model = build_model(cfg, self.data.channels, self.data.image_size).to(self.device)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.augment = build_augment(cfg)
        self.view_schedule = ViewSchedule(self.augment, t)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.scheduler = build_scheduler(self.optimizer, t.max_steps, cfg.optimizer)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        self.train_x = self.data.train_x.to(self.device)
        self.mean = torch.tensor(self.data.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.data.std, device=self.device).view(1, -1, 1, 1)
        self.generators = {"data": torch.Generator().manual_seed(t.seed),
                           "augment": torch.Generator(self.device).manual_seed(t.seed + 1)}
        self.sampler = EpochSampler(len(self.train_x), t.batch_size, self.generators["data"], self.device)
        self.ring = ckpt.CheckpointRing(self.out_dir / "checkpoints", t.ckpt_keep)
        self.tracker = Tracker(cfg.tracking)
        self.step, self.should_stop = 0, False
        self.history: list[dict[str, float]] = []   # every logged row, for summaries and tests
        self.probes: dict[str, float] = {}
        self._resume_run_id = None
        self._hook_states: dict = {}
        self.parent_hook_states: dict = {}       # a fork's parent's, offered to hooks' inherit()
        self.fork_info: dict = {}
        reinit_prefixes(self.model, cfg)   # a head name that does not exist fails now, not at a later fork
        if t.resume:
            self.load(ckpt.find_checkpoint(t.resume))
        elif t.fork:
            fork_from(self, ckpt.find_checkpoint(t.fork))

    # ---- the step -------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def views(self) -> list[torch.Tensor]:
        per_view = self.view_schedule.per_view(self.step, self.model.n_views)
        with torch.no_grad():
            x = self.train_x[self.sampler.next()].float().div_(255)
            return [self.normalize(a(x, self.generators["augment"])) for a in per_view]

    def train_step(self):
        t = self.cfg.trainer
        progress = self.step / t.max_steps
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else nullcontext())
        for _ in range(t.accum_steps):
            views = self.views()
            with autocast:
                out = apply_regularizers(self.model, views, self.model(views, progress), self.cfg.regularizers,
                                         self.step)
            if t.pcgrad and len(out.parts) > 1:
                surgery_backward(self.model, out.parts, self.scaler, t.accum_steps)
            else:
                self.scaler.scale(out.loss / t.accum_steps).backward()
        grad_norm = None
        for p in self._frozen_params():
            p.grad = None  # no gradient, so no update and no weight decay either
        if self.cfg.optimizer.weight_decay_end is not None:
            set_weight_decay(self.optimizer, self.step, t.max_steps, self.cfg.optimizer)
        if t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.model.after_optimizer_step((self.step + 1) / t.max_steps)
        return out, grad_norm

    def _frozen_params(self) -> list:
        t = self.cfg.trainer
        if self.step < t.freeze_backbone_steps:
            return list(self.model.backbone.parameters())
        if t.freeze_layers:
            return [p for stage in self.model.backbone.stages()[:t.freeze_layers] for p in stage]
        return []

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Probe the starting point, train to max_steps, probe and checkpoint the end; return a summary."""
        started = time.perf_counter()
        self._start_tracking()
        for i, hook in enumerate(self.hooks):
            hook.on_start(self)
            key = _hook_key(i, hook)
            if key in self._hook_states and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(self._hook_states[key])
            elif key in self.parent_hook_states and hasattr(hook, "inherit"):
                hook.inherit(self.parent_hook_states[key])
        try:
            if self.step == 0 and self.cfg.probe.at_start:
                self.probes["knn_init"] = self.probe()["probe/knn"]
                self.log({"probe/knn": self.probes["knn_init"]})
            self.train_loop()
            final = self.probe(linear=self.cfg.probe.linear)
            self.log(final)
            self.probes.update({k.split("/")[1]: v for k, v in final.items()})
            self.save()
            for hook in self.hooks:
                hook.on_end(self)
        except BaseException as e:
            # The MLflow run must not stay RUNNING forever: say how it ended, then let the error through.
            self.tracker.end("KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED")
            raise
        self.tracker.end()
        return self.summary(time.perf_counter() - started)

    def train_loop(self) -> None:
        t, p = self.cfg.trainer, self.cfg.probe
        window: dict[str, torch.Tensor] = {}
        window_steps, train_time = 0, 0.0
        with TrainProgress(self.last_step, self.step, t.progress) as bar:
            while self.step < self.last_step and not self.should_stop:
                tic = time.perf_counter()
                out, grad_norm = self.train_step()
                train_time += time.perf_counter() - tic
                self.step += 1
                window_steps += 1
                for k, v in {"total": out.loss.detach(), **out.terms}.items():
                    window[k] = window.get(k, 0.0) + v.float()
                for hook in self.hooks:
                    hook.after_step(self, out)
                if self.step % t.log_every == 0 or self.step == self.last_step:
                    row = {f"loss/{k}": (v / window_steps).item() for k, v in window.items()}
                    row["train/lr"] = self.optimizer.param_groups[0]["lr"]
                    row["train/throughput"] = window_steps * t.batch_size * t.accum_steps / max(train_time, 1e-9)
                    if grad_norm is not None:
                        row["train/grad_norm"] = float(grad_norm)
                    self.log(row)
                    bar.update(self.step, row["loss/total"], row["train/throughput"])
                    window, window_steps, train_time = {}, 0, 0.0
                else:
                    bar.update(self.step)
                if p.every and self.step % p.every == 0 and self.step < self.last_step:
                    self.log(self.probe())
                if t.reinit_every and self.step % t.reinit_every == 0 and self.step < self.last_step:
                    reinit_heads(self)
                if t.ckpt_every and self.step % t.ckpt_every == 0:
                    self.save()

    def log(self, row: dict[str, float]) -> None:
        self.history.append({"step": self.step, **row})
        self.tracker.log_metrics(row, self.step)

    # ---- probes ---------------------------------------------------------------------------------
    def probe(self, linear: bool = False, max_train: int | None = None,
              max_val: int | None = None, encode=None) -> dict[str, float]:
        """kNN (and optionally linear) accuracy of the encoder on the validation split. `max_train` and
        `max_val` cap the bank and the queries (the monitor's cheaper probes); `encode` replaces the
        encoder (`pixels` gives the raw-pixel baseline under the same protocol)."""
        p = self.cfg.probe
        was_training = self.model.training
        self.model.eval()
        bank_x, bank_y, val_x, val_y = self.probe_split(max_train, max_val)
        encode = encode or self.model.encode
        bank = extract_features(encode, bank_x.to(self.device), self.normalize, p.batch_size)
        query = extract_features(encode, val_x.to(self.device), self.normalize, p.batch_size)
        bank_y, val_y = bank_y.to(self.device), val_y.to(self.device)
        out = {"probe/knn": knn_accuracy(bank, bank_y, query, val_y, p.knn_k, p.knn_temperature,
                                         self.data.num_classes)}
        if linear:
            out["probe/linear"] = linear_probe_accuracy(bank, bank_y, query, val_y, seed=self.cfg.trainer.seed)
        self.model.train(was_training)
        return out

    def probe_split(self, max_train: int | None = None, max_val: int | None = None):
        """The probe's bank (images, labels) and queries (images, labels), in the order `probe` embeds them."""
        p = self.cfg.probe
        bank_x, bank_y = _subset(self.data.train_x, self.data.train_y, min(p.max_train, max_train or p.max_train))
        val_x, val_y = _subset(self.data.val_x, self.data.val_y, max_val)
        return bank_x, bank_y, val_x, val_y

    # ---- checkpoints ----------------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        t = self.cfg.trainer
        return min(t.stop_at, t.max_steps) if t.stop_at else t.max_steps

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "optimizer_name": self.cfg.optimizer.name,
            "model_init": self.cfg.model.init,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": ckpt.rng_state(self.generators),
            "mlflow_run_id": self.tracker.run_id or "",
            "fork_info": self.fork_info,
            # hooks with state (the monitor's baselines and streaks) resume where they stopped
            "hooks": {_hook_key(i, h): h.state_dict() for i, h in enumerate(self.hooks) if hasattr(h, "state_dict")},
        }

    def save(self) -> Path:
        return self.ring.save(self.step, self.state_dict())

    def load(self, path: Path, strict: bool = True) -> None:
        state = ckpt.load(path)  # on the CPU; load_state_dict moves tensors to the model's device
        try:
            self.model.load_state_dict(state["model"], strict=strict)
        except RuntimeError as e:   # another architecture: missing, unexpected or mis-shaped weights
            first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise ConfigError(f"trainer.resume: {path} was written by another model ({first[:160]}); "
                              "valid: a checkpoint of this config (trainer.fork loads what fits)") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(state["rng"], self.generators)
        self.step = int(state["step"])
        self._resume_run_id = state.get("mlflow_run_id") or None
        self.fork_info = state.get("fork_info") or {}
        self._hook_states = state.get("hooks") or {}

    # ---- tracking and summary -------------------------------------------------------------------
    def _start_tracking(self) -> None:
        c = self.cfg
        run_name = c.tracking.run_name or f"{c.name}-{c.method.name}-{c.data.name}"
        tags = {"autofix.method": c.method.name, "autofix.data": c.data.name, "autofix.out_dir": str(self.out_dir),
                **c.tracking.tags}
        resume_id = self._resume_run_id if self._resume_run_id and self._run_exists(self._resume_run_id) else None
        self.tracker.start(run_name, flatten(c), tags, run_id=resume_id, parent_run_id=c.tracking.parent_run_id)
        if self.config_text and resume_id is None:
            self.tracker.log_text(self.config_text, "config.yaml")

    def _run_exists(self, run_id: str) -> bool:
        if not self.tracker.enabled:
            return False
        from mlflow.tracking import MlflowClient
        try:
            MlflowClient(self.tracker.uri).get_run(run_id)
            return True
        except Exception:  # a checkpoint moved to another store: start a fresh run instead
            return False

    def summary(self, wall_s: float) -> dict:
        last = next((r for r in reversed(self.history) if "loss/total" in r), {})
        return {
            "name": self.cfg.name, "method": self.cfg.method.name, "data": self.cfg.data.name,
            "steps": self.step, "wall_s": round(wall_s, 1),
            "loss_terms": {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("loss/")},
            "knn": self.probes.get("knn"), "knn_init": self.probes.get("knn_init"),
            "linear": self.probes.get("linear"), "checkpoints": str(self.ring.folder),
            "mlflow": self.tracker.where(), "run_id": self.tracker.run_id,
        }


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """At most n images, class-balanced and the same on every call and in every run (seed 0): splits keep
    their on-disk order, which is class by class for an image folder, so the first n would be one class."""
    if n is None or n >= len(y):
        return x, y
    idx = torch.from_numpy(cap_indices(y.cpu().numpy(), n, seed=0)).to(y.device)
    return x[idx], y[idx]
