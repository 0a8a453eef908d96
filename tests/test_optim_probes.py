"""Optimizers, schedules and probes on inputs whose answer is known."""
import math

import pytest
import torch
from torch import nn

from autofix.config.schema import OptimizerConfig
from autofix.monitor.probes import knn_accuracy, linear_probe_accuracy
from autofix.run.optim import LARS, build_optimizer, lr_factor, set_weight_decay, weight_decay_at


def test_warmup_then_cosine_to_min():
    cfg = OptimizerConfig(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(50, 110, OptimizerConfig(schedule="constant")) == 1.0
    assert lr_factor(50, 100, OptimizerConfig(schedule="linear")) == pytest.approx(0.5)
    # a decay sized for a shorter run: at its floor from decay_steps on, half-way at half of it
    short = OptimizerConfig(schedule="cosine", warmup_steps=10, decay_steps=60)
    assert lr_factor(35, 300, short) == pytest.approx(0.5)
    assert lr_factor(60, 300, short) == pytest.approx(0.0, abs=1e-12) and lr_factor(250, 300, short) == 0.0


def test_lars_step_size_follows_the_trust_ratio():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5
    w.grad = torch.tensor([0.0, 10.0])            # norm 10
    opt = LARS([{"params": [w], "lars": True}], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.02)
    opt.step()
    # update = lr * eta * |w| / |g| * g = 0.01 * g
    assert torch.allclose(w.detach(), torch.tensor([3.0, 3.9]))


def test_norms_and_biases_get_no_weight_decay_and_predictor_its_own_lr():
    from reference_models.backbones import BackboneConfig, build_backbone
    from reference_models.heads import HeadConfig
    from reference_models.methods import BYOLConfig, build_method
    model = build_method("byol", build_backbone(BackboneConfig(width=8)), BYOLConfig(), HeadConfig(32, 16),
                         HeadConfig(32, 16))
    opt = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.1, weight_decay=0.5, predictor_lr_mult=10.0))
    for g in opt.param_groups:
        if not g["lars"]:
            assert g["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in g["params"])
        if g["part"] == "predictor":
            assert g["lr"] == pytest.approx(1.0)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_groups == trainable  # the EMA target is not optimised


def test_weight_decay_schedule_runs_a_cosine_from_start_to_end_and_spares_norms():
    cfg = OptimizerConfig(weight_decay=0.1, weight_decay_end=0.0)
    assert weight_decay_at(0, 100, cfg) == pytest.approx(0.1)
    assert weight_decay_at(50, 100, cfg) == pytest.approx(0.05)
    assert weight_decay_at(100, 100, cfg) == pytest.approx(0.0)
    assert weight_decay_at(50, 100, OptimizerConfig(weight_decay=0.1)) == 0.1   # no end: constant
    assert weight_decay_at(50, 100, OptimizerConfig(weight_decay=0.04, weight_decay_end=0.4)) == pytest.approx(0.22)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.param_groups = lambda: {"backbone": list(model.parameters())}
    opt = build_optimizer(model, OptimizerConfig(name="sgd", weight_decay=0.1, weight_decay_end=0.0))
    set_weight_decay(opt, 50, 100, cfg)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, pytest.approx(0.05)]


def test_knn_is_perfect_on_separated_clusters_and_chance_on_noise():
    torch.manual_seed(0)
    centers = torch.eye(4) * 10
    bank_y = torch.arange(4).repeat(25)
    bank = centers[bank_y] + torch.randn(100, 4) * 0.1
    query_y = torch.arange(4).repeat(10)
    query = centers[query_y] + torch.randn(40, 4) * 0.1
    assert knn_accuracy(bank, bank_y, query, query_y, k=5) == 1.0
    noise = knn_accuracy(torch.randn(400, 8), torch.randint(0, 4, (400,)), torch.randn(400, 8),
                         torch.randint(0, 4, (400,)), k=20)
    assert 0.1 < noise < 0.4


def test_knn_counts_nan_features_as_wrong():
    bank, y = torch.eye(2).repeat(5, 1), torch.tensor([0, 1] * 5)
    query = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]])
    assert knn_accuracy(bank, y, query, torch.tensor([0, 0]), k=3) == 0.5


def test_linear_probe_separable_and_nan():
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    assert linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]) >= 0.95
    x[0, 0] = float("nan")
    import math
    assert math.isnan(linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]))


@pytest.mark.parametrize("decay", [0.5, 2.0])
@pytest.mark.parametrize("backbone", ["tiny_convnet", "vit"])
def test_layer_lr_decay_scales_each_stage(compose_run, backbone, decay):
    """Stage i of n (the backbone's stages(), input first) gets decay^(n-1-i) x lr: below 1 the input
    end learns slowest, above 1 fastest; the heads keep the lr; every parameter is in one group."""
    from autofix.run.build import build_model
    from autofix.run.optim import build_optimizer
    cfg = compose_run("vicreg", f"model.backbone={backbone}", f"optimizer.layer_lr_decay={decay}",
                      "optimizer.exclude_norm_bias=false")
    model = build_model(cfg, 3, 32)
    opt = build_optimizer(model, cfg.optimizer)
    stages = model.backbone.stages()
    assert len(stages) >= 2
    mult = {id(p): g["lr_mult"] for g in opt.param_groups for p in g["params"]}
    for i, stage in enumerate(stages):
        assert [mult[id(p)] for p in stage] == pytest.approx([decay ** (len(stages) - 1 - i)] * len(stage))
    assert {g["lr_mult"] for g in opt.param_groups if g["part"] == "head"} == {1.0}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_probe_subset_is_class_balanced_and_fixed():
    # an image folder's split is class by class on disk: the first 40 would all be class 0
    from autofix.run.trainer import _subset
    y = torch.arange(4).repeat_interleave(50)
    x = torch.arange(200)
    sx, sy = _subset(x, y, 40)
    assert torch.bincount(sy, minlength=4).tolist() == [10, 10, 10, 10]
    assert torch.equal(y[sx], sy)
    assert torch.equal(_subset(x, y, 40)[0], sx)          # the same images on every call
    assert _subset(x, y, None)[0] is x and _subset(x, y, 500)[0] is x


def test_cosine_restarts_returns_to_the_peak_every_period():
    cfg = OptimizerConfig(schedule="cosine_restarts", restart_steps=10, warmup_steps=5, min_lr_ratio=0.0)
    assert lr_factor(4, 100, cfg) == pytest.approx(1.0)               # end of warm-up
    assert lr_factor(5, 100, cfg) == pytest.approx(1.0)               # a cycle starts at the peak
    assert lr_factor(10, 100, cfg) == pytest.approx(0.5)              # half way: cos(pi/2)
    assert lr_factor(15, 100, cfg) == pytest.approx(1.0)              # restarted
    assert lr_factor(14, 100, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_radam_is_built_with_decoupled_decay():
    model = nn.Linear(4, 2)
    model.param_groups = lambda: {"backbone": list(model.parameters())}
    opt = build_optimizer(model, OptimizerConfig(name="radam", lr=0.01, weight_decay=0.1))
    assert isinstance(opt, torch.optim.RAdam)
    assert opt.defaults["decoupled_weight_decay"] is True
    w = model.weight.detach().clone()
    model.weight.grad, model.bias.grad = torch.zeros_like(model.weight), torch.zeros_like(model.bias)
    opt.step()   # a zero gradient: only the decoupled decay moves the weights, by lr x wd
    assert torch.allclose(model.weight, w * (1 - 0.01 * 0.1))


def test_pcgrad_removes_only_conflicting_components():
    from autofix.run.optim import pcgrad
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.equal(pcgrad([a, b]), a + b)                      # orthogonal: a plain sum
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])   # dot -1: each loses its part along the other
    # g1 - (-1/2) g2 = [0.5, 0.5]; g2 - (-1/1) g1 = [0, 1]
    assert torch.allclose(pcgrad([g1, g2]), torch.tensor([0.5, 1.5]))
    assert torch.equal(pcgrad([g1]), g1)


def test_gradient_surgery_step_adds_up_like_a_plain_backward_when_terms_agree(compose_run, tmp_path):
    """Two halves of one loss never conflict: the surgery's gradients are a plain backward's, parameter by
    parameter. VICReg's three terms do conflict, and trainer.pcgrad then changes the step's gradients."""
    from autofix.run.optim import surgery_backward
    from autofix.run.trainer import Trainer

    cfg = compose_run("vicreg", "trainer.max_steps=1", "monitor.enabled=false")
    trainer = Trainer(cfg, tmp_path / "a")
    views = trainer.views()
    out = trainer.model(views, 0.0)
    trainer.optimizer.zero_grad(set_to_none=True)
    out.loss.backward(retain_graph=True)
    plain = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    trainer.optimizer.zero_grad(set_to_none=True)
    surgery_backward(trainer.model, {"a": out.loss / 2, "b": out.loss / 2}, trainer.scaler, accum_steps=1)
    halves = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert len(halves) == len(plain) and all(torch.allclose(h, g, atol=1e-6) for h, g in zip(halves, plain))

    def step_grads(*overrides):
        t = Trainer(compose_run("vicreg", "trainer.max_steps=1", "monitor.enabled=false", *overrides),
                    tmp_path / "_".join(overrides or ("plain",)))
        t.train_step()
        return torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None])

    plain_step, surgery_step = step_grads(), step_grads("trainer.pcgrad=true")
    assert surgery_step.shape == plain_step.shape and not torch.allclose(surgery_step, plain_step, atol=1e-6)
