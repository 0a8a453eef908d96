"""Backbones, heads and the config knobs the catalog's fixes turn."""
import math

import pytest
import torch
from torch import nn

from reference_models.backbones import BackboneConfig, build_backbone
from reference_models.heads import HeadConfig, mlp
from reference_models.layers import ACTIVATIONS, NORMS, DropPath, sincos_pos_embed


@pytest.mark.parametrize("name,width,out", [("tiny_convnet", 8, 32), ("resnet18", 8, 64), ("vit", 32, 32)])
def test_backbones_give_pooled_features_of_out_dim(name, width, out):
    net = build_backbone(BackboneConfig(backbone=name, width=width, depth=1, heads=4), 3, 32)
    y = net(torch.randn(4, 3, 32, 32))
    assert y.shape == (4, out) and net.out_dim == out


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh"])
def test_every_norm_and_activation_builds_and_backpropagates(norm, act):
    net = build_backbone(BackboneConfig(width=8, norm=norm, activation=act), 3, 16)
    net(torch.randn(4, 3, 16, 16)).sum().backward()
    kinds = {type(m) for m in net.modules()}
    if norm == "batch":
        assert nn.BatchNorm2d in kinds
    if norm == "none":
        assert not kinds & {nn.BatchNorm2d, nn.GroupNorm}


def test_residual_switch_changes_the_function():
    torch.manual_seed(0)
    with_res = build_backbone(BackboneConfig(width=8, depth=2, residual=True), 3, 16)
    torch.manual_seed(0)
    no_res = build_backbone(BackboneConfig(width=8, depth=2, residual=False), 3, 16)
    x = torch.randn(2, 3, 16, 16)
    with_res.eval(), no_res.eval()
    assert not torch.allclose(with_res(x), no_res(x))


@pytest.mark.parametrize("backbone", ["tiny_convnet", "resnet18"])
def test_padding_mode_changes_only_what_the_border_sees(backbone):
    """Reflection padding on a constant image: every 3x3 window then sees the constant, so the stem's output
    is the same at the border as inside; with zeros the border differs. 1x1 shortcuts keep no padding."""
    torch.manual_seed(0)
    zeros = build_backbone(BackboneConfig(backbone=backbone, width=8), 3, 16).eval()
    torch.manual_seed(0)
    reflect = build_backbone(BackboneConfig(backbone=backbone, width=8, padding_mode="reflect"), 3, 16).eval()
    padded = [m for m in reflect.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert padded and all(m.padding_mode == "reflect" for m in padded)
    assert all(m.padding_mode == "zeros" for m in reflect.modules() if isinstance(m, nn.Conv2d) and m.padding == (0, 0))
    x = torch.full((1, 3, 16, 16), 0.7)
    conv = lambda net: net.stem[0](x)[0, 0]
    assert torch.allclose(conv(reflect), conv(reflect)[8, 8].expand(16, 16), atol=1e-6)
    assert not torch.allclose(conv(zeros)[0, 0], conv(zeros)[8, 8])
    assert torch.allclose(conv(zeros)[8, 8], conv(reflect)[8, 8])      # the same weights inside
    from reference_models.fields import FieldError, validate
    with pytest.raises(FieldError, match="padding_mode: 'mirror' is not valid; choose one of zeros, reflect"):
        validate(BackboneConfig(padding_mode="mirror"))


def test_init_schemes_differ_and_unknown_ones_fail():
    a = build_backbone(BackboneConfig(width=8, init="orthogonal"))
    w = a.stem[0].weight.flatten(1)
    assert torch.allclose(w @ w.T, torch.eye(8) * (w @ w.T).diag().mean(), atol=1e-4)  # orthogonal rows
    with pytest.raises(ValueError, match="valid"):
        build_backbone(BackboneConfig(width=8, init="magic"))


def test_activation_list_is_complete():
    from reference_models.layers import activation
    for name in ACTIVATIONS:
        assert isinstance(activation(name), nn.Module)


def test_mlp_head_depth_and_norm():
    head = mlp(16, HeadConfig(hidden_dim=32, out_dim=8, depth=3, norm="layer"))
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears] == [32, 32, 8]
    assert sum(isinstance(m, nn.LayerNorm) for m in head) == 2
    assert head(torch.randn(5, 16)).shape == (5, 8)


def test_drop_path_is_identity_in_eval_and_unbiased_in_train():
    dp = DropPath(0.5)
    x = torch.ones(20000, 1)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    y = dp(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)


def test_sincos_positions_are_distinct_and_bounded():
    pe = sincos_pos_embed(4, 16)
    assert pe.shape == (16, 16) and pe.abs().max() <= 1.0
    assert torch.cdist(pe, pe).fill_diagonal_(1.0).min() > 0.1


def test_attention_scale_zero_makes_every_map_uniform_and_a_large_one_sharp():
    from autofix.monitor import tokens
    from reference_models.backbones.vit import Block
    x = torch.randn(2, 9, 16)
    for scale, check in ((0.0, lambda h: h == pytest.approx(1.0, abs=1e-6)), (50.0, lambda h: h < 0.2)):
        block = Block(16, 2, 2.0, "layer", "gelu", 0.0, 0.0, True, attn_scale=scale).eval()
        q, k, _ = block.split_heads(block.qkv(block.norm1(x)))
        assert check(tokens.attention_entropy(tokens.attention_probs(q, k, block.scale)))


@pytest.mark.parametrize("kw", [{"backbone": "vit", "pos_embed": "learned", "token_drop": 0.5},
                                {"backbone": "vit", "qk_norm": True, "head_drop": 0.5, "attn_scale": 2.0},
                                {"backbone": "vit", "pos_embed": "none"},
                                {"weight_norm": "spectral"}, {"weight_norm": "weight"}])
def test_backbone_knobs_build_and_train(kw):
    from reference_models.backbones import BackboneConfig, build_backbone
    net = build_backbone(BackboneConfig(width=16, **kw), 3, 32)
    net.train()
    out = net(torch.randn(4, 3, 32, 32))
    out.sum().backward()
    assert torch.isfinite(out).all()
    if kw.get("pos_embed") == "learned":
        assert net.pos_embed.grad is not None and net.pos_embed.requires_grad
    if kw.get("pos_embed") == "none":
        assert not net.pos_embed.any()
    if "weight_norm" in kw:
        assert any(hasattr(m, "parametrizations") for m in net.modules())


def test_l2_input_head_sees_directions_only():
    head = mlp(16, HeadConfig(hidden_dim=32, out_dim=8, depth=2, norm="none", l2_input=True))
    x = torch.randn(5, 16)
    assert torch.allclose(head(x), head(7.0 * x), atol=1e-6)
    plain = mlp(16, HeadConfig(hidden_dim=32, out_dim=8, depth=2, norm="none"))
    assert not torch.allclose(plain(x), plain(7.0 * x), atol=1e-3)


def test_spectral_norm_head_keeps_its_last_layer_at_unit_gain():
    torch.manual_seed(0)
    head = mlp(16, HeadConfig(hidden_dim=32, out_dim=8, depth=1, spectral_norm=True))
    with torch.no_grad():
        head[0].parametrizations.weight.original.mul_(50.0)   # a stretched layer ...
    head.train()
    for _ in range(30):                                        # (power iteration converges as it trains)
        head(torch.randn(4, 16))
    head.eval()
    # ... still maps no input to more than its own length: largest singular value 1
    assert torch.linalg.matrix_norm(head[0].weight, ord=2).item() == pytest.approx(1.0, rel=1e-3)


def test_centred_head_removes_a_persistent_shift_and_keeps_sample_differences():
    from reference_models.heads import RunningCenter

    center = RunningCenter(3, momentum=0.5)
    shift = torch.tensor([10.0, -4.0, 2.0])
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    first = center(x + shift)                       # the first batch sees a zero centre
    assert torch.allclose(first, x + shift)
    assert torch.allclose(center.center, 0.5 * (x + shift).mean(0))
    for _ in range(40):                             # the centre converges to the batches' mean
        center(x + shift)
    assert torch.allclose(center.center, (x + shift).mean(0), atol=1e-6)
    center.eval()
    out = center(x + shift)
    assert torch.allclose(out, x - x.mean(0), atol=1e-5)               # the shift is gone ...
    assert torch.allclose(out[0] - out[1], x[0] - x[1], atol=1e-5)     # ... the differences are not
    before = center.center.clone()
    center(x + 100.0)                                # eval mode does not move it
    assert torch.equal(center.center, before)
    # as a head option: the last layer of the projector; off (0) adds nothing
    assert isinstance(mlp(16, HeadConfig(depth=2, center_momentum=0.9))[-1], RunningCenter)
    assert not any(isinstance(m, RunningCenter) for m in mlp(16, HeadConfig(depth=2)))


def test_block_masks_hide_whole_blocks_and_keep_the_ratio():
    from reference_models.methods.mae import block_sides, random_mask
    assert block_sides(8, 8) == [1, 2, 4, 8] and block_sides(6, 4) == [1, 2, 3]
    torch.manual_seed(0)
    for block, ratio in [(1, 0.75), (2, 0.75), (4, 0.75), (2, 0.6)]:
        keep, mask = random_mask(32, 64, ratio, "cpu", block)
        assert keep.shape == (32, 16 if ratio == 0.75 else 26) and (mask.sum(1) == 64 - keep.shape[1]).all()
        assert (mask.gather(1, keep) == 0).all()
        if block > 1:
            # per block of block x block patches: all hidden or all kept, but for at most one split block
            blocks = mask.view(32, 8 // block, block, 8 // block, block).sum((2, 4)).flatten(1)
            split = ((blocks > 0) & (blocks < block * block)).sum(1)
            assert (split <= 1).all() and (split == 0).any() == (ratio == 0.75)
    torch.manual_seed(0)
    single = random_mask(1000, 64, 0.75, "cpu", 1)[1].view(1000, 8, 8)
    # horizontal neighbours agree always with 2x2 blocks, at chance (about 0.62) with single patches
    blocked = random_mask(1000, 64, 0.75, "cpu", 2)[1].view(1000, 8, 8)
    same = lambda m: (m[:, :, ::2] == m[:, :, 1::2]).float().mean().item()  # noqa: E731
    assert same(blocked) == 1.0 and same(single) < 0.7


def test_mae_num_masks_averages_over_masks_and_a_block_that_does_not_tile_is_refused():
    from reference_models.methods.mae import MAE, MAEConfig
    vit = lambda: build_backbone(BackboneConfig(backbone="vit", width=16, depth=1, heads=2), 3, 16)  # noqa: E731
    x = torch.randn(4, 3, 16, 16)
    one, two = MAE(vit(), MAEConfig(decoder_dim=8, decoder_depth=1)), MAE(vit(), MAEConfig(decoder_dim=8, decoder_depth=1, num_masks=2))
    two.load_state_dict(one.state_dict())
    torch.manual_seed(1)
    pred, mask, _ = one.reconstruct(x.repeat(2, 1, 1, 1), 0.75)     # what two masks per image are
    from reference_models.losses import masked_reconstruction, patchify
    target = patchify(x, 4).repeat(2, 1, 1)
    torch.manual_seed(1)
    out = two([x], 0.0)
    assert out.loss.item() == pytest.approx(masked_reconstruction(pred, target, mask).item(), rel=1e-6)
    assert out.embeddings["encoder"][0].shape == (4, 16)
    assert not torch.equal(mask[:4], mask[4:])       # each copy of an image has its own mask
    two.eval()
    assert two([x], 0.0).embeddings["encoder"][0].shape == (4, 16)  # one mask outside training
    vary = MAE(vit(), MAEConfig(decoder_dim=8, decoder_depth=1, mask_block=2, mask_block_vary=True))
    torch.manual_seed(0)
    masks = [vary.reconstruct(x, 0.75)[1].view(4, 4, 4) for _ in range(20)]
    blocky = [bool((m[:, :, ::2] == m[:, :, 1::2]).all() and (m[:, ::2] == m[:, 1::2]).all()) for m in masks]
    assert any(blocky) and not all(blocky)           # sides 1 and 2 drawn step by step
    with pytest.raises(ValueError, match="mask_block=3 does not tile the 4x4 patch grid; valid: 1, 2, 4"):
        MAE(vit(), MAEConfig(mask_block=3))


def test_ghost_batchnorm_normalises_each_sub_batch_on_its_own():
    from reference_models.layers import GhostBatchNorm1d, use_ghost_batchnorm
    net = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1, affine=False))
    assert use_ghost_batchnorm(net, 2) == 1 and isinstance(net[1], GhostBatchNorm1d)
    bn = net[1]
    x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    assert bn(x).flatten().tolist() == pytest.approx([-1, 1, -1, 1], abs=1e-4)   # per pair: mean, then std 1
    bn.ghost_groups = 1
    assert bn(x).flatten()[0].item() == pytest.approx(-6 / math.sqrt(26), abs=1e-4)   # the whole batch: mean 6
    assert bn.num_batches_tracked.item() == 3                                        # one update per sub-batch
    bn.eval()
    assert torch.allclose(bn(x), (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps), atol=1e-6)
    assert set(net.state_dict()) == {"0.weight", "0.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}


def test_shuffled_second_view_meets_other_company_in_ghost_batchnorm_and_is_put_back_in_order(compose_run):
    from autofix.core.errors import ConfigError
    from autofix.run.build import build_model
    x = torch.randn(8, 3, 16, 16)
    torch.manual_seed(0)
    plain = build_model(compose_run("simclr", "model.bn_groups=2"), 3, 16).train()
    (h1, h2), _ = plain.embed([x, x])
    assert torch.allclose(h1, h2)                     # same images, same sub-batches: the same features
    plain.shuffle_bn = True
    (h1, h2), (z1, z2) = plain.embed([x, x])
    assert not torch.allclose(h1, h2, atol=1e-3)       # other company in the sub-batches
    free = build_model(compose_run("byol", "model.norm=none", "model.projector.norm=none",
                                   "model.predictor.norm=none", "model.bn_groups=2", "model.shuffle_bn=true"), 3, 16)
    (h1, h2), (z1, z2) = free.train().embed([x, x])   # no batch norm: shuffling and putting back change nothing
    assert torch.allclose(h1, h2, atol=1e-6) and torch.allclose(z1, z2, atol=1e-6)
    assert torch.allclose(free._target(x), free.shuffled(free._target, x), atol=1e-6)
    with pytest.raises(ConfigError, match="shuffle_bn: true needs model.bn_groups >= 2"):
        compose_run("simclr", "model.shuffle_bn=true")
