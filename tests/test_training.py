"""Each method trains on CPU and its loss falls; resuming reproduces the uninterrupted run."""
import math

import pytest
import torch

from autofix.run.checkpoint import CheckpointRing, find_checkpoint, load
from autofix.run.trainer import Trainer


def mean_loss(history, steps):
    rows = [r["loss/total"] for r in history if "loss/total" in r and r["step"] in steps]
    return sum(rows) / len(rows)


@pytest.mark.parametrize("method", ["simclr", "byol", "vicreg", "mae"])
def test_each_method_trains_and_its_loss_falls(compose_run, tmp_path, method):
    cfg = compose_run(method, "trainer.max_steps=30", "trainer.log_every=1", "trainer.ckpt_every=0",
                      "optimizer.warmup_steps=3", *(["model.width=32", "model.depth=2"] if method == "mae" else []))
    trainer = Trainer(cfg, tmp_path / method)
    summary = trainer.fit()
    first, last = mean_loss(trainer.history, range(1, 6)), mean_loss(trainer.history, range(26, 31))
    assert math.isfinite(last)
    assert last < first, f"{method}: loss went from {first:.4f} to {last:.4f}"
    assert summary["steps"] == 30 and 0.0 <= summary["knn"] <= 1.0
    assert (tmp_path / method / "checkpoints").is_dir()  # the final checkpoint is always written


@pytest.mark.parametrize("method", ["vicreg", "byol"])
def test_resumed_run_reproduces_uninterrupted_losses(compose_run, tmp_path, method):
    common = ["trainer.max_steps=12", "trainer.log_every=1", "trainer.ckpt_every=6", "optimizer.warmup_steps=2"]
    full = Trainer(compose_run(method, *common), tmp_path / "full")
    full.fit()
    half = tmp_path / "full" / "checkpoints" / "step_00000006.pt"
    assert half.exists()
    resumed = Trainer(compose_run(method, *common, f"trainer.resume={half}"), tmp_path / "resumed")
    assert resumed.step == 6
    resumed.fit()
    a = [r["loss/total"] for r in full.history if "loss/total" in r and r["step"] > 6]
    b = [r["loss/total"] for r in resumed.history if "loss/total" in r]
    assert len(a) == len(b) == 6
    assert a == b  # bit-for-bit on the CPU
    wa = full.model.state_dict()
    wb = resumed.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_ring_keeps_newest_and_pinned(tmp_path):
    ring = CheckpointRing(tmp_path, keep=2)
    for step in (10, 20, 30):
        ring.save(step, {"step": step})
    assert ring.steps() == [20, 30]
    ring.pin(30)
    for step in (40, 50, 60):
        ring.save(step, {"step": step, "x": torch.ones(2)})
    assert ring.steps() == [30, 50, 60]
    assert find_checkpoint(tmp_path).name == "step_00000060.pt"
    assert load(find_checkpoint(tmp_path))["step"] == 60
    with pytest.raises(FileNotFoundError):
        find_checkpoint(tmp_path / "empty")


def test_gradient_accumulation_and_clipping_run(compose_run, tmp_path):
    cfg = compose_run("simclr", "trainer.max_steps=3", "trainer.accum_steps=2", "trainer.grad_clip=0.5",
                      "trainer.log_every=1", "optimizer=lars")
    trainer = Trainer(cfg, tmp_path / "acc")
    trainer.fit()
    norms = [r["train/grad_norm"] for r in trainer.history if "train/grad_norm" in r]
    assert len(norms) == 3 and all(n > 0 for n in norms)


def test_nan_is_recorded_not_raised(compose_run, tmp_path):
    # mask ratio 0 with a masked-only loss is 0/0: the run must go on and report NaN
    cfg = compose_run("mae", "method.mask_ratio=0.0", "trainer.max_steps=3", "trainer.log_every=1",
                      "model.width=32", "model.depth=1")
    trainer = Trainer(cfg, tmp_path / "nan")
    summary = trainer.fit()
    assert math.isnan(summary["loss_terms"]["total"])


def test_hooks_see_every_step_and_can_stop_the_run(compose_run, tmp_path):
    from autofix.run.trainer import Hook

    class StopAtFive(Hook):
        def __init__(self):
            self.calls = []

        def on_start(self, trainer):
            self.calls.append("start")

        def after_step(self, trainer, out):
            self.calls.append(trainer.step)
            assert "projector" in out.embeddings  # monitors get the embeddings of the step
            if trainer.step == 5:
                trainer.should_stop = True

        def on_end(self, trainer):
            self.calls.append("end")

    hook = StopAtFive()
    summary = Trainer(compose_run("simclr", "trainer.max_steps=20"), tmp_path / "hook", hooks=[hook]).fit()
    assert hook.calls == ["start", 1, 2, 3, 4, 5, "end"]
    assert summary["steps"] == 5


def test_frozen_backbone_takes_no_update_while_heads_do(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    cfg = compose_run("vicreg", "trainer.freeze_backbone_steps=3", "trainer.max_steps=3", "probe.at_start=false")
    trainer = Trainer(cfg, tmp_path / "frozen")
    before = [p.detach().clone() for p in trainer.model.backbone.parameters()]
    head = [p.detach().clone() for p in trainer.model.projector.parameters()]
    trainer.train_loop()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.backbone.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(head, trainer.model.projector.parameters()))


@pytest.mark.parametrize("model", ["tiny_convnet", "vit_tiny"])
def test_frozen_layers_stay_put_while_deeper_ones_train(compose_run, tmp_path, model):
    from autofix.run.trainer import Trainer
    method = "mae" if model == "vit_tiny" else "vicreg"
    cfg = compose_run(method, f"model={model}", "trainer.freeze_layers=2", "trainer.max_steps=2", "probe.at_start=false")
    trainer = Trainer(cfg, tmp_path / "frozen")
    stages = trainer.model.backbone.stages()
    before = [[p.detach().clone() for p in stage] for stage in stages]
    trainer.train_loop()
    moved = [not all(torch.equal(a, b) for a, b in zip(old, stage)) for old, stage in zip(before, stages)]
    assert moved[:2] == [False, False] and all(moved[2:]) and len(moved) > 2


def test_fork_takes_weights_and_step_but_the_childs_hyperparameters(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("vicreg", "trainer.max_steps=20", "trainer.ckpt_every=10"), tmp_path / "parent")
    parent.fit()
    ckpt = parent.ring.path(10)
    child_cfg = compose_run("vicreg", "trainer.max_steps=20", f"trainer.fork={ckpt}", "trainer.stop_at=15",
                            "optimizer.lr_scale=0.1", "trainer.seed=7")
    child = Trainer(child_cfg, tmp_path / "child")
    assert child.step == 10 and child.fork_info["optimizer_state"] and not child.fork_info["reinitialized"]
    saved = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, child.model.state_dict()[k]) for k, v in saved.items())
    # the lr follows the child's config (a tenth of the parent's) at the parent's point in the schedule
    assert child.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * parent_lr_at(parent, 10), rel=1e-6)
    child.train_loop()
    assert child.step == 15


def parent_lr_at(trainer, step):
    from autofix.run.optim import lr_factor
    return trainer.cfg.optimizer.lr * lr_factor(step, trainer.cfg.trainer.max_steps, trainer.cfg.optimizer)


def test_fork_with_a_new_architecture_reinitializes_what_no_longer_fits(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("vicreg", "trainer.max_steps=10", "trainer.ckpt_every=10"), tmp_path / "p")
    parent.fit()
    child = Trainer(compose_run("vicreg", "trainer.max_steps=20", f"trainer.fork={parent.ring.path(10)}",
                                "model.projector.hidden_dim=64", "optimizer.name=sgd"), tmp_path / "c")
    assert child.step == 10 and not child.fork_info["optimizer_state"]
    assert any(k.startswith("projector") for k in child.fork_info["reinitialized"])
    assert not any(k.startswith("backbone") for k in child.fork_info["reinitialized"])


def test_a_patch_that_only_adds_buffers_keeps_the_optimizer_moments(compose_run, tmp_path):
    """A SimCLR child with a negative queue: every parameter fits, so Adam's moments carry over; the queue,
    new, starts empty."""
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("simclr", "trainer.max_steps=10", "trainer.ckpt_every=10"), tmp_path / "p")
    parent.fit()
    child = Trainer(compose_run("simclr", "trainer.max_steps=20", f"trainer.fork={parent.ring.path(10)}",
                                "method.queue_size=64"), tmp_path / "c")
    assert child.fork_info["optimizer_state"]
    assert int(child.model.queue_filled) == 0
    child.train_loop()
    assert int(child.model.queue_filled) == 64


def test_reinit_heads_gives_a_fresh_projector_and_keeps_the_backbone(compose_run, tmp_path):
    """trainer.reinit_heads=[projector]: a mid-training head reset. The backbone comes from the checkpoint,
    the projector (and BYOL's momentum copy of it) keeps the child's own fresh initialisation."""
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("byol", "trainer.max_steps=10", "trainer.ckpt_every=10"), tmp_path / "p")
    parent.fit()
    saved = torch.load(parent.ring.path(10), weights_only=True)["model"]
    fresh = Trainer(compose_run("byol", "trainer.max_steps=20", "trainer.seed=3"), tmp_path / "f").model.state_dict()
    child = Trainer(compose_run("byol", "trainer.max_steps=20", f"trainer.fork={parent.ring.path(10)}",
                                "trainer.seed=3", "trainer.reinit_heads=[projector]"), tmp_path / "c")
    own = child.model.state_dict()
    reset = set(child.fork_info["reinitialized"])
    assert reset == {k for k in own if k.startswith(("projector.", "target_projector."))}
    assert all(torch.equal(own[k], saved[k]) for k in own if k not in reset)      # backbone, predictor, target
    assert all(torch.equal(own[k], fresh[k]) for k in reset)                      # the child's own init
    assert not all(torch.equal(own[k], saved[k]) for k in reset if own[k].is_floating_point() and own[k].dim() > 1)
    assert not child.fork_info["optimizer_state"]       # moments of the old projector would not fit the new one


def test_reinit_heads_names_the_heads_a_method_has(compose_run, tmp_path):
    from autofix.core.errors import ConfigError
    from autofix.run.trainer import Trainer
    with pytest.raises(ConfigError, match="predictor is not a head of this vicreg model; valid: projector"):
        Trainer(compose_run("vicreg", "trainer.reinit_heads=[predictor]"), tmp_path)


def test_augment_warmup_weakens_the_views_early_and_reaches_the_configured_ones(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    trainer = Trainer(compose_run("simclr", "trainer.max_steps=40", "trainer.augment_warmup_steps=20"), tmp_path)
    assert trainer.view_schedule.at(trainer.step).cfg.flip_p == pytest.approx(0.1 * trainer.augment.cfg.flip_p)   # step 0: a tenth
    trainer.step = 15
    assert trainer.view_schedule.at(trainer.step).cfg.crop_scale[0] == pytest.approx(1 - 0.8 * (1 - trainer.augment.cfg.crop_scale[0]))
    trainer.step = 20
    assert trainer.view_schedule.at(trainer.step) is trainer.augment


def test_augment_cycle_swings_the_views_between_full_and_low_strength(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    trainer = Trainer(compose_run("simclr", "trainer.max_steps=100", "trainer.augment_warmup_steps=10",
                                  "trainer.augment_cycle_steps=40", "trainer.augment_cycle_low=0.2"), tmp_path)
    flip = trainer.augment.cfg.flip_p
    strength = {}
    for step in (10, 20, 30, 50, 90):
        trainer.step = step
        strength[step] = trainer.view_schedule.at(trainer.step).cfg.flip_p / flip
    # 10 steps after the warm-up: a quarter period, halfway down (0.6); half a period: the low; a period: full
    assert strength == pytest.approx({10: 1.0, 20: 0.6, 30: 0.2, 50: 1.0, 90: 1.0})
    trainer.step = 30
    assert trainer.view_schedule.at(trainer.step) is trainer.view_schedule.at(trainer.step)          # each level built once


def test_a_weaker_second_view_makes_a_strong_weak_pair(compose_run, tmp_path):
    from autofix.run.trainer import Trainer
    trainer = Trainer(compose_run("simclr", "trainer.max_steps=10", "augment.second_view_strength=0.0"), tmp_path)
    first, second = trainer.views()
    # strength 0 is the identity: the second view is the stored 8-bit images as they are (normalised), so
    # its pixels are whole grey levels; the augmented first view's (crops resampled, colours jittered) are not
    grey = lambda v: ((v * trainer.std + trainer.mean) * 255).float()
    assert torch.allclose(grey(second), grey(second).round(), atol=1e-3)
    assert not torch.allclose(grey(first), grey(first).round(), atol=1e-3)
    assert trainer.view_schedule.second_view(trainer.augment).cfg.flip_p == 0.0
    assert trainer.view_schedule.second_view(trainer.augment).cfg.crop_scale == (1.0, 1.0)
    assert trainer.view_schedule.second_view(trainer.augment) is trainer.view_schedule.second_view(trainer.augment)   # built once
    assert not torch.equal(first, second)
    half = Trainer(compose_run("simclr", "trainer.max_steps=10", "augment.second_view_strength=0.5"), tmp_path / "h")
    assert half.view_schedule.second_view(half.augment).cfg.jitter_p == pytest.approx(0.5 * half.augment.cfg.jitter_p)
    same = Trainer(compose_run("simclr", "trainer.max_steps=10"), tmp_path / "s")
    assert same.view_schedule.second_view(same.augment) is same.augment                                  # default: symmetric


def test_reinit_heads_resets_the_projector_its_moments_and_its_momentum_copy(compose_run, tmp_path):
    from autofix.run.fork import reinit_heads
    from autofix.run.trainer import Trainer
    trainer = Trainer(compose_run("byol", "trainer.max_steps=10", "trainer.reinit_heads=[projector]",
                                  "trainer.reinit_every=5"), tmp_path)
    trainer.train_loop()   # resets at step 5; the run goes on
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    reinit_heads(trainer)
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], trained[k]) for k in now if k.startswith(("backbone.", "predictor.")))
    weight = next(k for k in now if k.startswith("projector.") and k.endswith("weight") and now[k].dim() == 2)
    assert not torch.equal(now[weight], trained[weight])
    assert all(torch.equal(now[k], now[f"target_{k}"]) for k in now if k.startswith("projector."))
    assert not any(p in trainer.optimizer.state for p in trainer.model.projector.parameters())
    assert any(p in trainer.optimizer.state for p in trainer.model.backbone.parameters())


def test_fork_with_another_init_scheme_starts_the_backbone_over_and_shrink_perturb_moves_it(compose_run, tmp_path):
    from autofix.monitor.optimization import duplicate_unit_share
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("vicreg", "trainer.max_steps=10", "trainer.ckpt_every=10", "fault=init_symmetric"),
                     tmp_path / "p")
    parent.fit()
    assert duplicate_unit_share(parent.model.backbone.parameters()) == 1.0     # constant init: all copies
    fork = f"trainer.fork={parent.ring.path(10)}"
    same = Trainer(compose_run("vicreg", "trainer.max_steps=20", fork, "fault=init_symmetric"), tmp_path / "a")
    assert not same.fork_info["reinitialized"]
    other = Trainer(compose_run("vicreg", "trainer.max_steps=20", fork, "fault=init_symmetric", "model.init=kaiming"),
                    tmp_path / "b")
    assert {k.split(".")[0] for k in other.fork_info["reinitialized"]} == {"backbone"}
    assert duplicate_unit_share(other.model.backbone.parameters()) < 0.1
    perturbed = Trainer(compose_run("vicreg", "trainer.max_steps=20", fork, "fault=init_symmetric",
                                    "trainer.fork_shrink=0.5", "trainer.fork_perturb=0.1"), tmp_path / "c")
    saved = torch.load(parent.ring.path(10), weights_only=True)["model"]
    w = next(k for k, v in saved.items() if k.startswith("backbone.") and v.dim() == 4)
    moved = perturbed.model.state_dict()[w] - 0.5 * saved[w]
    assert moved.std().item() == pytest.approx(0.1 * (2.0 / saved[w][0].numel()) ** 0.5, rel=0.2)
    assert duplicate_unit_share(perturbed.model.backbone.parameters()) < 0.1


@pytest.mark.parametrize("given,env,expected", [(0, "1", 1), (2, "1", 2), (0, None, 0)])
def test_a_run_inside_a_slurm_job_takes_the_jobs_cpus(compose_run, tmp_path, monkeypatch, given, env, expected):
    """Without cgroups a SLURM job sees every core of the node; two jobs on two cores each computing on
    both oversubscribe them (a 20-step run took 52 s instead of 10). An explicit trainer.threads wins."""
    if env is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", env)
    before = torch.get_num_threads()
    try:
        tr = Trainer(compose_run("vicreg", f"trainer.threads={given}"), tmp_path)
        assert tr.cfg.trainer.threads == expected  # recorded as such in MLflow's params
        assert torch.get_num_threads() == (expected or before)
    finally:
        torch.set_num_threads(before)
