"""Regularizers on inputs whose answer is known, and their wiring into a method's loss."""
import math

import pytest
import torch

from reference_models.regularizers import (
    RegularizersConfig,
    anchor_loss,
    apply_regularizers,
    attention_entropy_loss,
    consistency_loss,
    covariance_gap,
    entropy_loss,
    feature_norm_loss,
    head_diversity_loss,
    mean_pair_cosine,
    orthogonality_loss,
    repulsion_loss,
    token_similarity_loss,
    uniformity_loss,
)


def test_uniformity_zero_when_rows_coincide_and_negative_when_spread():
    same = torch.ones(8, 4)
    assert uniformity_loss(same).item() == pytest.approx(0.0, abs=1e-6)
    # orthonormal rows: every pair at squared distance 2, so the loss is exactly -2t
    eye = torch.eye(4)
    assert uniformity_loss(eye, t=2.0).item() == pytest.approx(-4.0, abs=1e-5)


def test_entropy_is_minus_log_d_for_a_balanced_batch_and_zero_for_one_dimension():
    balanced = torch.eye(5) * 100.0          # each row puts all its mass on a different dimension
    assert entropy_loss(balanced, temperature=1.0).item() == pytest.approx(-math.log(5), abs=1e-4)
    one = torch.zeros(6, 5)
    one[:, 2] = 100.0
    assert entropy_loss(one, temperature=1.0).item() == pytest.approx(0.0, abs=1e-4)


def test_orthogonality_zero_for_orthonormal_rows_and_positive_otherwise():
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    assert orthogonality_loss([q[:4]]).item() == pytest.approx(0.0, abs=1e-5)
    assert orthogonality_loss([q[:, :4]]).item() == pytest.approx(0.0, abs=1e-5)  # tall: judged on columns
    # all-ones 2x2: W W^T = [[2,2],[2,2]]; minus I -> [[1,2],[2,1]]; squared sum 10, over 2 rows = 5
    assert orthogonality_loss([torch.ones(2, 2)]).item() == pytest.approx(5.0)


def test_feature_norm_penalty():
    z = torch.tensor([[3.0, 4.0], [0.0, 5.0]])   # norms 5 and 5
    assert feature_norm_loss(z).item() == pytest.approx(25.0)
    assert feature_norm_loss(z, target=5.0).item() == pytest.approx(0.0)


def test_consistency_zero_for_same_direction_one_for_orthogonal():
    z = torch.randn(10, 8)
    assert consistency_loss(z, 3.0 * z).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.eye(4)[:2], torch.eye(4)[2:]
    assert consistency_loss(a, b).item() == pytest.approx(1.0)


def test_repulsion_one_for_identical_rows_zero_for_orthogonal():
    assert repulsion_loss(torch.ones(5, 3)).item() == pytest.approx(1.0, abs=1e-6)
    assert repulsion_loss(torch.eye(6)).item() == pytest.approx(0.0, abs=1e-6)


def test_anchor_zero_when_directions_kept_one_when_orthogonal_two_when_flipped():
    z = torch.randn(10, 8)
    assert anchor_loss(z, 2.0 * z).item() == pytest.approx(0.0, abs=1e-6)
    assert anchor_loss(torch.eye(4)[:2], torch.eye(4)[2:]).item() == pytest.approx(1.0)
    assert anchor_loss(z, -z).item() == pytest.approx(2.0)


def test_covariance_gap_ignores_means_and_sees_axes():
    z = torch.randn(64, 4)
    assert covariance_gap(z, z + 5.0).item() == pytest.approx(0.0, abs=1e-5)
    # two batches: one spread along axis 0 (variance 2), one along axis 1 -> ||diag(2,-2,0,0)||^2 / 4 = 2
    a = torch.zeros(4, 4)
    a[:2, 0], a[2:, 0] = 1.0, -1.0          # variance (4 * 1) / 3 along axis 0
    b = a[:, [1, 0, 2, 3]]
    v = 4 / 3
    assert covariance_gap(a, b).item() == pytest.approx(2 * v * v / 4)


def test_anchor_term_is_zero_at_a_fresh_snapshot_and_grows_as_the_model_moves(compose_run):
    """The snapshot is taken at the first step it is needed and retaken `every` steps later: right after a
    snapshot the term is 0; once the weights move it is not; and it gives the model a gradient."""
    from autofix.run.build import build_model
    cfg = compose_run("vicreg", "regularizers.anchor.weight=1", "regularizers.anchor.every=5")
    model = build_model(cfg, 3, 32).eval()   # eval: BatchNorm's running stats do not move between calls
    views = [torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)]
    assert apply_regularizers(model, views, model(views, 0.0), cfg.regularizers, step=0).terms["reg_anchor"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.5 * torch.randn_like(p))
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers, step=3)
    assert out.terms["reg_anchor"].item() > 0.01
    out.loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    fresh = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers, step=5)   # retaken
    assert fresh.terms["reg_anchor"].item() == pytest.approx(0.0, abs=1e-5)


def test_two_view_terms_refuse_a_one_view_method(compose_run):
    from autofix.run.build import build_model
    cfg = compose_run("mae", "regularizers.view_covariance.weight=1")
    model = build_model(cfg, 3, 32)
    x = [torch.randn(4, 3, 32, 32)]
    with pytest.raises(ValueError, match="two views"):
        apply_regularizers(model, x, model(x, 0.0), cfg.regularizers)


def test_no_active_regularizer_leaves_the_output_untouched():
    from reference_models.methods.base import MethodOutput
    out = MethodOutput(torch.tensor(1.0), {"x": torch.tensor(1.0)}, {"projector": (torch.randn(4, 3),) * 2})
    assert apply_regularizers(None, [], out, RegularizersConfig()) is out


def test_regularizers_add_weighted_terms_and_gradients(compose_run):
    from autofix.run.build import build_model
    cfg = compose_run("simclr", "regularizers.uniformity.weight=0.5", "regularizers.repulsion.weight=2",
                      "regularizers.orthogonality.weight=0.1", "regularizers.consistency.weight=1",
                      "regularizers.variance.weight=3", "regularizers.variance.on=encoder")
    assert cfg.regularizers.active() == ["variance", "uniformity", "orthogonality", "consistency", "repulsion"]
    model = build_model(cfg, 3, 32)
    views = [torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)]
    torch.manual_seed(0)
    plain = model(views, 0.0)
    torch.manual_seed(0)
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers)
    w = {"variance": 3, "uniformity": 0.5, "orthogonality": 0.1, "consistency": 1, "repulsion": 2}
    expected = plain.loss + sum(w[k] * out.terms[f"reg_{k}"] for k in w)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())


def test_mae_regularizer_falls_back_to_the_encoder(compose_run):
    from autofix.run.build import build_model
    cfg = compose_run("mae", "regularizers.uniformity.weight=1")
    model = build_model(cfg, 3, 32)
    out = apply_regularizers(model, [torch.randn(8, 3, 32, 32)], model([torch.randn(8, 3, 32, 32)], 0.0),
                             cfg.regularizers)
    assert torch.isfinite(out.terms["reg_uniformity"])


def test_ramp_scales_the_weight_linearly():
    from reference_models.methods.base import MethodOutput
    cfg = RegularizersConfig()
    cfg.repulsion.weight, cfg.repulsion.ramp_steps = 2.0, 10
    z = torch.eye(4)
    z[1] = z[0]  # nearest-neighbour cosine: rows 0 and 1 at 1, rows 2 and 3 at 0 -> repulsion 0.5
    out = MethodOutput(torch.tensor(0.0), {}, {"projector": (z, z)})
    assert apply_regularizers(None, [], out, cfg, step=4).loss.item() == pytest.approx(2.0 * 0.5 * 5 / 10)
    assert apply_regularizers(None, [], out, cfg, step=50).loss.item() == pytest.approx(2.0 * 0.5)


def test_attention_entropy_loss_pulls_towards_its_target():
    t = 6
    uniform = torch.full((2, 3, t, t), 1.0 / t)
    one_hot = torch.zeros(2, 3, t, t)
    one_hot[..., 2] = 1.0
    assert attention_entropy_loss([uniform], 0.7).item() == pytest.approx(0.3 ** 2, abs=1e-6)
    assert attention_entropy_loss([one_hot], 0.7).item() == pytest.approx(0.7 ** 2, abs=1e-6)
    assert attention_entropy_loss([uniform, one_hot], 0.5).item() == pytest.approx(0.25, abs=1e-6)


def test_head_diversity_and_token_similarity_are_one_when_all_alike():
    maps = torch.softmax(torch.randn(2, 1, 5, 5), dim=-1)
    assert head_diversity_loss([maps.expand(2, 4, 5, 5)]).item() == pytest.approx(1.0, abs=1e-6)
    heads = torch.stack([torch.eye(5), torch.roll(torch.eye(5), 1, dims=1)])[None]  # disjoint maps
    assert head_diversity_loss([heads]).item() == pytest.approx(0.0, abs=1e-6)
    tokens = torch.randn(3, 1, 8).repeat(1, 7, 1)
    tokens[:, 0] = torch.randn(3, 8)               # the class token differs and is left out
    assert token_similarity_loss(tokens).item() == pytest.approx(1.0, abs=1e-6)
    assert mean_pair_cosine(torch.eye(4)[None]).item() == pytest.approx(0.0, abs=1e-7)


def test_token_terms_train_a_vit_through_its_recorded_attention(compose_run):
    from autofix.run.build import build_model
    cfg = compose_run("mae", "regularizers.attention_entropy.weight=1", "regularizers.head_diversity.weight=1",
                      "regularizers.token_similarity.weight=1", "model.qk_norm=true", "model.head_drop=0.25",
                      "regularizers.rotation.weight=1")   # its extra forward records too, and is dropped
    model = build_model(cfg, 3, 32).train()
    x = [torch.randn(4, 3, 32, 32)]
    out = apply_regularizers(model, x, model(x, 0.0), cfg.regularizers)
    assert model.backbone.internals == []           # consumed: nothing piles up across steps
    for name in ("attention_entropy", "head_diversity", "token_similarity"):
        assert 0.0 <= out.terms[f"reg_{name}"].item() <= 1.0
    out.loss.backward()
    assert model.backbone.blocks[0].qkv.weight.grad.abs().sum() > 0


def test_token_terms_on_a_convnet_are_a_config_error(compose_run):
    from autofix.core.errors import ConfigError
    from autofix.run.build import build_model
    cfg = compose_run("simclr", "regularizers.token_similarity.weight=1")
    with pytest.raises(ConfigError, match="vit"):
        build_model(cfg, 3, 32)


def test_filter_similarity_zero_for_orthogonal_units_one_for_copies():
    from reference_models.regularizers import filter_similarity_loss
    q, _ = torch.linalg.qr(torch.randn(9, 9))
    assert filter_similarity_loss([q[:4].reshape(4, 1, 3, 3)]).item() == pytest.approx(0.0, abs=1e-6)
    copies = torch.ones(3, 2, 3, 3) * torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1, 1)   # scaled, sign-flipped
    assert filter_similarity_loss([copies]).item() == pytest.approx(1.0)
    # two layers: the mean of 0 and 1; rows at 60 degrees: cos^2 = 1/4
    sixty = torch.tensor([[1.0, 0.0], [0.5, 3 ** 0.5 / 2]])
    assert filter_similarity_loss([q[:4], copies]).item() == pytest.approx(0.5)
    assert filter_similarity_loss([sixty]).item() == pytest.approx(0.25)


def test_layerwise_vc_zero_for_spread_decorrelated_layers_and_gamma_for_constant_ones():
    from reference_models.regularizers import layerwise_vc_loss
    # +-2 in three columns of a 4-row Hadamard matrix: each column has std 2.31 (> gamma 1) and zero
    # covariance with the others
    h = torch.tensor([[1., 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]]) * 2
    assert layerwise_vc_loss([h, h[:, :2]]).item() == pytest.approx(0.0, abs=1e-7)
    constant = torch.ones(4, 3)                   # a collapsed layer: std sqrt(1e-4) = 0.01 in every channel
    assert layerwise_vc_loss([constant]).item() == pytest.approx(0.99, abs=1e-6)
    assert layerwise_vc_loss([h, constant]).item() == pytest.approx(0.99 / 2, abs=1e-6)  # averaged over layers
    copies = torch.tensor([[2., 2], [-2, -2], [2, 2], [-2, -2]])   # two identical channels, var 16/3 each
    assert layerwise_vc_loss([copies], cov_ratio=1.0).item() == pytest.approx(2 * (16 / 3) ** 2 / 2, rel=1e-5)


@pytest.mark.parametrize("conf,overrides,stages", [("simclr", [], 3), ("byol", [], 3),
                                                   ("mae", [], 3), ("vicreg", ["model=resnet18"], 8)])
def test_layer_vc_reads_each_training_forwards_intermediate_stages(compose_run, conf, overrides, stages):
    """One record per view and intermediate stage (the target's and the monitor's gradient-free forwards
    leave none), consumed by the step so nothing piles up; its gradient reaches the first stage."""
    from autofix.run.build import build_model
    cfg = compose_run(conf, *overrides, "regularizers.layer_vc.weight=1", "regularizers.consistency.weight=1")
    model = build_model(cfg, 3, 16).train()
    views = [torch.randn(8, 3, 16, 16) for _ in range(model.n_views)]
    with torch.no_grad():
        model.encode(views[0])
    assert model.backbone.stage_outputs == []
    out = model(views, 0.0)
    assert len(model.backbone.stage_outputs) == stages * model.n_views
    out = apply_regularizers(model, views, out, cfg.regularizers)
    assert model.backbone.stage_outputs == []       # the consistency term's extra forward included
    assert out.terms["reg_layer_vc"].item() > 0
    out.loss.backward()
    first = model.backbone.feature_stages()[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first.parameters())


def test_layer_vc_on_a_one_stage_vit_is_a_config_error(compose_run):
    from autofix.core.errors import ConfigError
    from autofix.run.build import build_model
    cfg = compose_run("mae", "model.depth=1", "regularizers.layer_vc.weight=1")
    with pytest.raises(ConfigError, match="layer_vc.*only one"):
        build_model(cfg, 3, 32)


def test_shuffle_blocks_moves_whole_blocks_and_keeps_the_content():
    from reference_models.augment import shuffle_blocks
    torch.manual_seed(0)
    x = torch.arange(4 * 2 * 8 * 8, dtype=torch.float32).view(4, 2, 8, 8)
    y = shuffle_blocks(x, 4)
    cut = lambda t: t.reshape(4, 2, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(4, 16, -1)
    for i in range(4):   # each image's 16 blocks are its own 16 blocks, each intact, in another order
        assert sorted(map(tuple, cut(y)[i].tolist())) == sorted(map(tuple, cut(x)[i].tolist()))
    assert not torch.equal(x, y)
    assert torch.equal(shuffle_blocks(x, 1), x)


def test_shuffle_consistency_needs_blocks_that_tile_the_image(compose_run):
    from autofix.core.errors import ConfigError
    with pytest.raises(ConfigError, match="regularizers.consistency.grid: 5 blocks do not tile data.image_size 32"):
        compose_run("simclr", "regularizers.consistency.weight=1", "regularizers.consistency.perturbation=shuffle",
                    "regularizers.consistency.grid=5")


def test_layer_redundancy_is_the_mean_cka_of_neighbouring_layers():
    from reference_models.regularizers import layer_redundancy_loss, linear_cka
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    y = torch.randn(4000, 6, generator=g)
    assert layer_redundancy_loss([x, 2 * x @ q]).item() == pytest.approx(1.0, abs=1e-5)   # a block passing on
    assert layer_redundancy_loss([x, y]).item() < 0.01                                    # unrelated layers
    # three layers: (x -> x rotated) is 1, (rotated -> y) about 0; the mean of the two pairs
    assert layer_redundancy_loss([x, x @ q, y]).item() == pytest.approx(0.5, abs=0.01)
    assert linear_cka(x, torch.cat([x, y], 1)).item() == pytest.approx(2 ** -0.5, abs=0.01)
    a = x[:64].clone().requires_grad_(True)
    linear_cka(a, x[:64] @ q + 0.1 * y[:64]).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_layer_redundancy_trains_through_the_stages_and_needs_two(compose_run):
    from autofix.core.errors import ConfigError
    from autofix.run.build import build_model
    cfg = compose_run("vicreg", "regularizers.layer_redundancy.weight=1")
    model = build_model(cfg, 3, 16).train()
    views = [torch.randn(8, 3, 16, 16) for _ in range(model.n_views)]
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers)
    assert 0.0 < out.terms["reg_layer_redundancy"].item() <= 1.0
    out.loss.backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="layer_redundancy.*has one"):
        build_model(compose_run("mae", "model.depth=2", "regularizers.layer_redundancy.weight=1"), 3, 32)


@pytest.mark.parametrize("kind", ["lowres", "shift"])
def test_scale_and_shift_consistency_compare_a_view_with_itself_perturbed(compose_run, kind):
    from autofix.run.build import build_model
    from reference_models.augment import at_resolution, shifted
    from reference_models.regularizers import consistency_loss
    cfg = compose_run("simclr", "regularizers.consistency.weight=1", f"regularizers.consistency.perturbation={kind}",
                      "regularizers.consistency.lowres=0.25", "regularizers.consistency.shift=0.25",
                      "regularizers.consistency.on=encoder")
    model = build_model(cfg, 3, 16).eval()     # eval: the check's forward sees the same BatchNorm statistics
    views = [torch.randn(4, 3, 16, 16) for _ in range(model.n_views)]
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers)
    perturb = {"lowres": lambda x: at_resolution(x, 0.25), "shift": lambda x: shifted(x, 0.25)}[kind]
    with torch.no_grad():
        want = consistency_loss(model.backbone(views[0]), model.backbone(perturb(views[0])))
    assert out.terms["reg_consistency"].item() == pytest.approx(want.item(), rel=1e-5)


def test_norm_preservation_is_the_squared_log_scale_step_between_layers():
    from reference_models.regularizers import norm_preservation_loss
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    wide = torch.cat([x, x], dim=1)                          # twice the width, the same per-channel scale
    assert norm_preservation_loss([x, wide]).item() == pytest.approx(0.0, abs=1e-6)
    assert norm_preservation_loss([x, 10 * x]).item() == pytest.approx(math.log(10) ** 2, rel=1e-5)
    # two steps, one of x10 and one back: each adds log(10)^2, averaged over the two pairs
    assert norm_preservation_loss([x, 10 * x, x]).item() == pytest.approx(math.log(10) ** 2, rel=1e-5)


@pytest.mark.parametrize("conf", ["vicreg", "mae"])
def test_norm_preservation_reads_the_stages_and_the_output(compose_run, conf):
    from autofix.run.build import build_model
    from reference_models.regularizers import norm_preservation_loss
    cfg = compose_run(conf, "regularizers.norm_preservation.weight=1")
    model = build_model(cfg, 3, 32).train()
    views = [torch.randn(4, 3, 32, 32) for _ in range(model.n_views)]
    out = model(views, 0.0)
    stages = [list(s) for s in zip(*[iter(model.backbone.stage_outputs)] * model.backbone.n_feature_stages)]
    want = sum(norm_preservation_loss([*s, h]) for s, h in zip(stages, out.embeddings["encoder"])) / len(stages)
    reg = apply_regularizers(model, views, out, cfg.regularizers)
    assert reg.terms["reg_norm_preservation"].item() == pytest.approx(want.item(), rel=1e-5)
    reg.loss.backward()
    assert next(model.backbone.feature_stages()[0].parameters()).grad.abs().sum() > 0


def test_position_loss_is_log_t_at_chance_and_zero_when_each_token_tells_its_place():
    from reference_models.regularizers import position_loss
    assert position_loss(torch.zeros(3, 5, 5)).item() == pytest.approx(math.log(5))
    assert position_loss(100 * torch.eye(5).expand(3, 5, 5)).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 100 * torch.eye(5).roll(1, dims=1).expand(2, 5, 5)          # every token names its neighbour
    assert position_loss(wrong).item() == pytest.approx(100.0, rel=1e-4)


def test_position_task_trains_a_head_on_a_vits_tokens_and_is_refused_on_a_convnet(compose_run):
    from autofix.core.errors import ConfigError
    from autofix.run.build import build_model
    cfg = compose_run("mae", "regularizers.position.weight=1")
    model = build_model(cfg, 3, 32).train()
    assert model.aux_heads["position"].out_features == model.backbone.num_patches
    views = [torch.randn(4, 3, 32, 32) for _ in range(model.n_views)]
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers)
    assert out.terms["reg_position"].item() == pytest.approx(math.log(64), rel=0.2)   # about chance at init
    out.loss.backward()
    assert model.aux_heads["position"].weight.grad.abs().sum() > 0
    assert model.backbone.patch_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="regularizers.position predicts a ViT's patch positions"):
        build_model(compose_run("simclr", "regularizers.position.weight=1"), 3, 32)


def test_rotation_and_reconstruction_terms_on_known_inputs():
    from reference_models.regularizers import reconstruction_loss, rotate_quarters, rotation_loss
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    turned = rotate_quarters(x, torch.tensor([0, 1]))
    assert torch.equal(turned[0], x[0]) and torch.equal(turned[1], torch.rot90(x[1], 1, dims=(1, 2)))
    assert torch.equal(rotate_quarters(rotate_quarters(x, torch.tensor([3, 2])), torch.tensor([1, 2])), x)
    k = torch.tensor([0, 1, 2, 3])
    assert rotation_loss(torch.zeros(4, 4), k).item() == pytest.approx(math.log(4))        # chance
    assert rotation_loss(100 * torch.eye(4), k).item() == pytest.approx(0.0, abs=1e-6)      # certain and right
    images = torch.full((2, 3, 8, 8), 0.5)
    assert reconstruction_loss(torch.full((2, 12), 0.5), images, 2).item() == pytest.approx(0.0)
    assert reconstruction_loss(torch.zeros(2, 12), images, 2).item() == pytest.approx(0.25)


@pytest.mark.parametrize("conf", ["simclr", "byol", "mae"])
def test_auxiliary_heads_are_built_trained_and_weighted(compose_run, conf):
    from autofix.run.build import build_model
    cfg = compose_run(conf, "regularizers.rotation.weight=0.5", "regularizers.reconstruction.weight=2",
                      "regularizers.reconstruction.size=4")
    model = build_model(cfg, 3, 16).train()
    assert set(model.aux_heads) == {"rotation", "reconstruction"}
    in_groups = {id(p) for ps in model.param_groups().values() for p in ps}
    assert all(id(p) in in_groups for p in model.aux_heads.parameters())   # the optimizer will train them
    views = [torch.randn(8, 3, 16, 16) for _ in range(model.n_views)]
    torch.manual_seed(0)
    plain = model(views, 0.0)
    torch.manual_seed(0)
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers)
    assert out.loss.item() == pytest.approx((plain.loss + 0.5 * out.terms["reg_rotation"]
                                             + 2 * out.terms["reg_reconstruction"]).item(), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_heads.parameters())
    assert "aux_heads.rotation.weight" in model.state_dict()
    assert not hasattr(build_model(compose_run(conf), 3, 16), "aux_heads")   # off: no head, nothing saved


def test_overalignment_is_zero_below_the_margin_and_one_minus_margin_for_identical_views():
    from reference_models.regularizers import overalignment_loss
    z = torch.randn(6, 5)
    assert overalignment_loss(z, z, 0.9).item() == pytest.approx(0.1, abs=1e-6)
    e = torch.eye(4)
    assert overalignment_loss(e, e.roll(1, dims=0), 0.9).item() == 0.0          # orthogonal pairs
    half = torch.stack([e[0], e[0]]), torch.stack([e[0], (e[0] + e[1]) / 2])      # cosines 1 and 0.707
    assert overalignment_loss(*half, 0.5).item() == pytest.approx((0.5 + (2 ** -0.5 - 0.5)) / 2, abs=1e-6)


def test_anchor_snapshot_is_taken_while_layer_vc_holds_recorded_stage_outputs(compose_run):
    """The consistency term's extra forward records stage outputs (tensors in a graph, which cannot be
    deep-copied) before the anchor term snapshots the backbone: the snapshot sets them aside."""
    from autofix.run.build import build_model
    cfg = compose_run("simclr", "regularizers.layer_vc.weight=1", "regularizers.consistency.weight=1",
                      "regularizers.anchor.weight=1")
    model = build_model(cfg, 3, 16).train()
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers, step=0)
    out.loss.backward()
    assert out.terms["reg_anchor"].item() == pytest.approx(0.0, abs=1e-5) and model.backbone.stage_outputs == []


# ---- the registry and where the anchor's snapshot lives ------------------------------------------
def test_the_registry_has_every_configured_term_with_its_config_class():
    import dataclasses

    from reference_models.regularizers import REGISTRY
    cfg = RegularizersConfig()
    names = [f.name for f in dataclasses.fields(cfg)]
    assert list(REGISTRY) == names
    assert all(type(getattr(cfg, n)) is REGISTRY[n].config for n in names)


def _anchor_step(model, cfg, step, size=16):
    """One regularized step, the weights moved by SGD after it; the step's anchor term."""
    g = torch.Generator().manual_seed(step)
    views = [torch.randn(8, 3, size, size, generator=g) for _ in range(2)]
    out = apply_regularizers(model, views, model(views, 0.0), cfg.regularizers, step=step)
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
                p.grad = None
    return out.terms["reg_anchor"].item()


def test_the_anchor_snapshot_is_in_the_state_dict_and_survives_a_strict_round_trip(compose_run):
    """A resume loads strictly into a freshly built model: the snapshot (its step and frozen weights)
    comes back, so the next step's anchor term is the uninterrupted run's."""
    import io

    from autofix.run.build import build_model
    cfg = compose_run("vicreg", "regularizers.anchor.weight=1", "regularizers.anchor.every=5")
    model = build_model(cfg, 3, 16).eval()   # eval: BatchNorm's running stats do not move between calls
    _anchor_step(model, cfg, 3)               # snapshot taken at step 3, then the weights move
    state = model.state_dict()
    snap_keys = [k for k in state if k.startswith("anchor_snapshot.")]
    assert "anchor_snapshot.step" in snap_keys and any(k.startswith("anchor_snapshot.nets.backbone.") for k in snap_keys)
    assert any(k.startswith("anchor_snapshot.nets.projector.") for k in snap_keys)   # on=projector, the default
    buffer = io.BytesIO()
    torch.save(state, buffer)          # as a checkpoint stores it (and loads it, weights_only)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    fresh = build_model(cfg, 3, 16).eval()
    assert fresh.anchor_snapshot.taken_at == -1           # built, not taken yet
    fresh.load_state_dict(saved, strict=True)
    assert fresh.anchor_snapshot.taken_at == int(fresh.anchor_snapshot.step) == 3
    restored = fresh.anchor_snapshot.state_dict()
    assert all(torch.equal(v, restored[k]) for k, v in model.anchor_snapshot.state_dict().items())
    live = model.backbone.state_dict()
    assert any(not torch.equal(live[k], restored[f"nets.backbone.{k}"]) for k in live)   # step 3's, not now's
    # the same snapshot (not one retaken at step 4): both models give the same, non-zero, term
    a, b = _anchor_step(model, cfg, 4), _anchor_step(fresh, cfg, 4)
    assert a == b and a > 1e-4 and fresh.anchor_snapshot.taken_at == 3
    assert _anchor_step(fresh, cfg, 8) == pytest.approx(0.0, abs=1e-5)   # 5 steps on: retaken
    assert fresh.anchor_snapshot.taken_at == 8


def test_without_the_anchor_term_no_snapshot_keys_and_with_it_no_extra_parameters(compose_run):
    """Models without the term keep their state_dict (old checkpoints and forks load as before); with it
    the snapshot is buffers only, so the optimizer's groups and a fork's every-parameter check are unchanged."""
    from autofix.run.build import build_model
    plain = build_model(compose_run("simclr"), 3, 16)
    anchored = build_model(compose_run("simclr", "regularizers.anchor.weight=1"), 3, 16)
    assert not any(k.startswith("anchor_snapshot") for k in plain.state_dict())
    assert not hasattr(plain, "anchor_snapshot")
    assert [n for n, _ in anchored.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert set(anchored.state_dict()) - set(plain.state_dict()) == {
        k for k in anchored.state_dict() if k.startswith("anchor_snapshot.")}


def test_the_package_keeps_no_module_level_mutable_state(compose_run):
    """The snapshot lives on its model: no module of the package holds a mutable container at module level
    (the registry is a read-only mapping), the globals are the same objects after training steps, and two
    models keep two snapshots of their own."""
    import collections.abc
    import importlib
    import pkgutil
    import weakref

    import reference_models.regularizers as pkg
    from autofix.run.build import build_model
    modules = [pkg] + [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    mutable = (dict, list, set, bytearray, collections.deque, weakref.WeakKeyDictionary,
               weakref.WeakValueDictionary, weakref.WeakSet)

    def state():
        return {(m.__name__, k): (id(v), len(v) if isinstance(v, collections.abc.Sized) and not isinstance(v, type) else None)
                for m in modules for k, v in vars(m).items() if not k.startswith("__")}

    found = [f"{m.__name__}.{k}" for m in modules for k, v in vars(m).items()
             if not k.startswith("__") and isinstance(v, mutable)]
    assert found == []
    before = state()
    cfg = compose_run("simclr", "regularizers.anchor.weight=1", "regularizers.anchor.every=2",
                      "regularizers.layer_vc.weight=1", "regularizers.uniformity.weight=1")
    first, second = build_model(cfg, 3, 16).train(), build_model(cfg, 3, 16).train()
    _anchor_step(first, cfg, 0)
    _anchor_step(second, cfg, 5)
    assert state() == before
    assert first.anchor_snapshot.taken_at == 0 and second.anchor_snapshot.taken_at == 5


def test_a_resumed_run_with_the_anchor_term_reproduces_the_uninterrupted_losses(compose_run, tmp_path):
    """Checkpointed at step 6 with the snapshot taken at step 4 (every 4 steps): the resumed run goes on
    with that snapshot, retakes it at step 8 as the uninterrupted run does, and its losses match bit for bit."""
    from autofix.run.trainer import Trainer
    common = ["regularizers.anchor.weight=1", "regularizers.anchor.every=4", "trainer.max_steps=10",
              "trainer.log_every=1", "trainer.ckpt_every=6", "optimizer.warmup_steps=2"]
    full = Trainer(compose_run("vicreg", *common), tmp_path / "full")
    full.fit()
    half = tmp_path / "full" / "checkpoints" / "step_00000006.pt"
    assert int(torch.load(half, weights_only=True)["model"]["anchor_snapshot.step"]) == 4
    resumed = Trainer(compose_run("vicreg", *common, f"trainer.resume={half}"), tmp_path / "resumed")
    assert resumed.step == 6 and resumed.model.anchor_snapshot.taken_at == 4
    resumed.fit()
    a = [r["loss/total"] for r in full.history if "loss/total" in r and r["step"] > 6]
    b = [r["loss/total"] for r in resumed.history if "loss/total" in r]
    assert len(a) == len(b) == 4 and a == b
    assert resumed.model.anchor_snapshot.taken_at == full.model.anchor_snapshot.taken_at == 8


def test_a_fork_that_adds_the_anchor_term_keeps_the_moments_and_takes_a_fresh_snapshot(compose_run, tmp_path):
    """The catalog's reg_anchor patch: a child of a run without the term. Every parameter still loads
    (the snapshot holds none), so the optimizer's moments carry over; the snapshot is taken at its first step."""
    from autofix.run.trainer import Trainer
    parent = Trainer(compose_run("vicreg", "trainer.max_steps=4", "trainer.ckpt_every=4"), tmp_path / "p")
    parent.fit()
    child = Trainer(compose_run("vicreg", "trainer.max_steps=6", f"trainer.fork={parent.ring.path(4)}",
                                "regularizers.anchor.weight=1"), tmp_path / "c")
    assert child.fork_info["optimizer_state"] and child.model.anchor_snapshot.taken_at == -1
    child.train_loop()
    assert child.model.anchor_snapshot.taken_at == 4
