"""Monitor metrics against answers known by construction (a rank-1 batch has effective rank 1)."""
import math

import pytest
import torch
from torch import nn

from autofix.monitor import activations, dynamics, geometry, method_metrics, optimization
from reference_models.losses import masked_reconstruction, patchify


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- geometry

def test_effective_rank_of_rank_one_and_isotropic():
    u, v = torch.randn(200, 1, generator=gen()), torch.randn(1, 32, generator=gen(1))
    assert geometry.effective_rank(u @ v) == pytest.approx(1.0, abs=1e-3)
    z = torch.randn(4000, 16, generator=gen(2))
    assert 14 < geometry.effective_rank(z) <= 16
    assert geometry.effective_rank(torch.zeros(10, 4)) == 0.0


def test_effective_rank_counts_equal_singular_values():
    z = torch.zeros(10, 8)
    z[0, 0], z[1, 1], z[2, 2] = 3.0, 3.0, 3.0
    assert geometry.effective_rank(z) == pytest.approx(3.0, rel=1e-4)


def _powerlaw_matrix(a, n=256, d=32):
    """Centred rows with covariance eigenvalues proportional to i^-a (singular values i^-a/2)."""
    x = torch.randn(n, d, generator=gen(3), dtype=torch.float64)
    u, _ = torch.linalg.qr(x - x.mean(dim=0))          # orthonormal columns orthogonal to the ones vector
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(4), dtype=torch.float64))
    s = torch.arange(1, d + 1, dtype=torch.float64).pow(-a / 2)
    return u @ torch.diag(s) @ v.T


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
def test_powerlaw_alpha_recovers_exponent(a):
    out = geometry.spectrum(_powerlaw_matrix(a), k=5)
    assert out["powerlaw_alpha"] == pytest.approx(a, rel=1e-3)
    ev = torch.arange(1, 33, dtype=torch.float64).pow(-a)
    assert out["top5_explained"] == pytest.approx((ev[:5].sum() / ev.sum()).item(), rel=1e-6)


def test_spectrum_of_rank_one_puts_everything_in_top1():
    z = torch.randn(100, 1, generator=gen()) @ torch.randn(1, 8, generator=gen(1))
    out = geometry.spectrum(z, k=1)
    assert out["top1_explained"] == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(out["powerlaw_alpha"])  # a single non-negligible eigenvalue: no slope to fit


def test_identical_rows_collapse_metrics():
    z = torch.tensor([[1.0, 2.0, -3.0]]).repeat(50, 1)
    assert geometry.mean_pairwise_cosine(z) == pytest.approx(1.0, abs=1e-9)
    assert geometry.normalized_std(z) == pytest.approx(0.0, abs=1e-9)
    assert geometry.uniformity(z) == pytest.approx(0.0, abs=1e-9)


def test_isotropic_rows_spread_metrics():
    d = 64
    z = torch.randn(2000, d, generator=gen(5))
    assert geometry.normalized_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.1)
    assert abs(geometry.mean_pairwise_cosine(z)) < 0.02
    # uniformity of spread points is well below that of identical points (0)
    assert geometry.uniformity(z[:300]) < -3.0


def test_neighbour_overlap_ignores_rotation_and_scale_and_drops_to_chance_when_shuffled():
    z = torch.randn(200, 16, generator=gen())
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen(1)))
    assert geometry.neighbour_overlap(z, 3.0 * z @ rotation, k=10) == pytest.approx(1.0)
    other = torch.randn(200, 16, generator=gen(2))           # neighbourhoods unrelated to z's
    assert geometry.neighbour_overlap(z, other, k=10) < 3 * 10 / 199
    half = z.clone()
    half[100:] = other[100:]                                 # half the rows moved: overlap in between
    assert 0.1 < geometry.neighbour_overlap(z, half, k=10) < 0.9
    assert math.isnan(geometry.neighbour_overlap(z[:5], z[:5], k=10))


def test_relative_displacement_sees_rotation_and_shift_that_neighbour_overlap_ignores():
    z = torch.randn(400, 32, generator=gen())
    assert geometry.relative_displacement(z, z) == 0.0
    rotation = torch.zeros(32, 32)                             # 90 degrees in each of 16 planes:
    for i in range(0, 32, 2):                                  # every row ends orthogonal to itself
        rotation[i, i + 1], rotation[i + 1, i] = 1.0, -1.0
    rotated = z @ rotation                                     # every neighbourhood kept
    assert geometry.neighbour_overlap(z, rotated, k=10) == pytest.approx(1.0)
    assert geometry.relative_displacement(z, rotated) == pytest.approx(1.0, abs=0.05)
    other = torch.randn(400, 32, generator=gen(2))             # a fresh draw: E||b-a||^2 = 2 * 32
    assert geometry.relative_displacement(z, other) == pytest.approx(1.0, abs=0.1)
    shift = torch.zeros(32)
    shift[0] = 8.0                                             # ||shift||^2 = 64 = the spread of one set
    assert geometry.relative_displacement(z, z + shift) == pytest.approx(64 / (2 * 32), rel=0.1)
    small = z + 0.1 * torch.randn(400, 32, generator=gen(3))  # settling: each row moves 10% of the spread
    assert geometry.relative_displacement(z, small) == pytest.approx(0.01 / 2.01, rel=0.15)
    assert math.isnan(geometry.relative_displacement(torch.ones(5, 3), torch.ones(5, 3)))
    assert math.isnan(geometry.relative_displacement(z, z[:10]))


def test_mean_pairwise_cosine_matches_explicit_pairs():
    z = torch.randn(7, 5, generator=gen(6))
    u = torch.nn.functional.normalize(z, dim=1)
    g = u @ u.T
    expected = (g.sum() - g.trace()) / (7 * 6)
    assert geometry.mean_pairwise_cosine(z) == pytest.approx(expected.item(), rel=1e-5)


def test_pair_cosines_and_alignment():
    z = torch.randn(32, 8, generator=gen(7))
    pc = geometry.pair_cosines(z, z.clone())
    assert pc["positive"] == pytest.approx(1.0, abs=1e-9)
    assert geometry.alignment(z, z.clone()) == pytest.approx(0.0, abs=1e-12)
    eye = torch.eye(6)
    pc = geometry.pair_cosines(eye, eye)
    assert pc["negative"] == pytest.approx(0.0, abs=1e-12)
    assert pc["gap"] == pytest.approx(1.0)
    # opposite unit vectors: distance 2, alignment with alpha=2 is 4
    assert geometry.alignment(eye, -eye) == pytest.approx(4.0)
    assert geometry.alignment(eye, -eye, alpha=1) == pytest.approx(2.0)


def test_uniformity_known_value():
    # two orthogonal unit vectors: squared distance 2, one pair: log exp(-2 * 2) = -4
    assert geometry.uniformity(torch.eye(2)) == pytest.approx(-4.0)
    assert geometry.uniformity(torch.eye(2), t=1) == pytest.approx(-2.0)


def test_correlation_stats():
    x = torch.randn(500, 1, generator=gen(8))
    out = geometry.correlation_stats(torch.cat([x, x], dim=1))
    assert out["mean_abs_corr"] == pytest.approx(1.0, abs=1e-9)
    assert out["offdiag_energy"] == pytest.approx(0.5, abs=1e-9)  # C = v [[1,1],[1,1]]
    ind = geometry.correlation_stats(torch.randn(5000, 8, generator=gen(9)))
    assert ind["mean_abs_corr"] < 0.03
    assert ind["offdiag_energy"] < 0.01
    # constant dimensions are ignored; fewer than two varying ones gives NaN
    with_const = torch.cat([x, x, torch.full((500, 3), 0.1)], dim=1)
    assert geometry.correlation_stats(with_const)["mean_abs_corr"] == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(geometry.correlation_stats(torch.cat([x, torch.ones(500, 2)], 1))["mean_abs_corr"])


def test_norm_stats_and_ratio():
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])   # norms 5 and 1
    out = geometry.norm_stats(z)
    assert out["mean"] == pytest.approx(3.0)
    assert out["cv"] == pytest.approx(2.0 / 3.0)
    assert geometry.norm_ratio(2 * z, z) == pytest.approx(2.0)
    assert math.isnan(geometry.norm_stats(torch.zeros(4, 3))["cv"])


def test_geometry_returns_nan_on_nonfinite_input():
    z = torch.randn(20, 4, generator=gen(10))
    z[3, 1] = float("nan")
    zi = z.clone()
    zi[3, 1] = float("inf")
    for bad in (z, zi):
        assert math.isnan(geometry.effective_rank(bad))
        assert all(math.isnan(v) for v in geometry.spectrum(bad).values())
        assert math.isnan(geometry.normalized_std(bad))
        assert math.isnan(geometry.mean_pairwise_cosine(bad))
        assert all(math.isnan(v) for v in geometry.pair_cosines(bad, bad).values())
        assert math.isnan(geometry.alignment(bad, bad))
        assert math.isnan(geometry.uniformity(bad))
        assert all(math.isnan(v) for v in geometry.correlation_stats(bad).values())
        assert all(math.isnan(v) for v in geometry.norm_stats(bad).values())
        assert math.isnan(geometry.norm_ratio(bad, bad))


def test_uniformity_matches_explicit_pairs():
    z = torch.randn(9, 4, generator=gen(17))
    u = torch.nn.functional.normalize(z, dim=1)
    vals = [math.exp(-2 * (u[i] - u[j]).pow(2).sum().item()) for i in range(9) for j in range(i + 1, 9)]
    assert geometry.uniformity(z) == pytest.approx(math.log(sum(vals) / len(vals)), rel=1e-5)


def test_metrics_accept_tensors_that_require_grad():
    z = torch.randn(16, 4, generator=gen(18)).requires_grad_()
    assert geometry.effective_rank(z) > 1
    assert -1 <= geometry.pair_cosines(z, z * 2)["gap"] <= 2
    assert 0 <= method_metrics.contrastive_entropy(z, z * 2, 0.2) <= 1


# ---------------------------------------------------------------- optimization

def _net_with_grads():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    fills = {"0.weight": 1.0, "0.bias": 2.0, "2.weight": 0.5}  # 2.bias gets no gradient
    for name, p in net.named_parameters():
        if name in fills:
            p.grad = torch.full_like(p, fills[name])
    return net


def test_grad_norms_on_hand_set_grads():
    out = optimization.grad_norms(_net_with_grads().named_parameters())
    # 0.weight: 6 ones -> sqrt 6; 0.bias: 3 twos -> sqrt 12; 2.weight: 6 halves -> sqrt 1.5
    assert set(out["per_layer"]) == {"0.weight", "0.bias", "2.weight"}
    assert out["per_layer"]["0.weight"] == pytest.approx(math.sqrt(6))
    assert out["per_layer"]["0.bias"] == pytest.approx(math.sqrt(12))
    assert out["global"] == pytest.approx(math.sqrt(6 + 12 + 1.5))
    assert out["first_last_ratio"] == pytest.approx(math.sqrt(6) / math.sqrt(1.5))
    net = nn.Linear(2, 2)
    none = optimization.grad_norms(net.named_parameters())
    assert math.isnan(none["global"]) and none["per_layer"] == {} and math.isnan(none["first_last_ratio"])


def test_grad_norms_do_not_overflow():
    p = nn.Parameter(torch.zeros(4, 4))
    p.grad = torch.full((4, 4), 1e30)
    assert optimization.grad_norms([("w", p)])["global"] == pytest.approx(4e30)


def test_update_and_weight_norm_ratios():
    before = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]])]   # norm 5
    after = [torch.tensor([3.0, 1.0]), torch.tensor([[0.0], [4.0]])]    # moved by 1
    assert optimization.update_ratio(before, after) == pytest.approx(0.2)
    assert optimization.update_ratio(before, before) == 0.0
    assert optimization.weight_norm_ratio([2 * t for t in before], before) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        optimization.update_ratio(before, after[:1])


def test_depth_update_ratio():
    # stage 0 (the input end) is params 0 and 1 (norm 5), the last stage param 2 (norm 10)
    before = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]]), torch.tensor([6.0, 8.0])]
    first_moves = [torch.tensor([3.0, 1.0]), before[1], torch.tensor([6.0, 9.0])]   # 1/5 against 1/10
    assert optimization.depth_update_ratio(before, first_moves, [[0, 1], [2]]) == pytest.approx(2.0)
    frozen_input = [before[0], before[1], torch.tensor([6.0, 9.0])]
    assert optimization.depth_update_ratio(before, frozen_input, [[0, 1], [2]]) == 0.0
    # the middle stage is not compared; the same relative step at both ends is 1
    scaled = [1.01 * t for t in before]
    assert optimization.depth_update_ratio(before, scaled, [[0], [1], [2]]) == pytest.approx(1.0)
    # nothing to compare: the last stage did not move, or a single stage
    assert math.isnan(optimization.depth_update_ratio(before, before, [[0, 1], [2]]))
    assert math.isnan(optimization.depth_update_ratio(before, scaled, [[0, 1, 2]]))


def test_depth_norm_growth():
    # stage 0 is params 0 and 1 (norm 5), the last stage param 2 (norm 10)
    initial = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0], [4.0]]), torch.tensor([6.0, 8.0])]
    heavy_input = [3 * initial[0], 3 * initial[1], initial[2]]           # the first stage tripled
    assert optimization.depth_norm_growth(heavy_input, initial, [[0, 1], [2]]) == pytest.approx(3.0)
    assert optimization.depth_norm_growth([2 * t for t in initial], initial, [[0, 1], [2]]) == pytest.approx(1.0)
    heavy_output = [initial[0], initial[1], 4 * initial[2]]
    assert optimization.depth_norm_growth(heavy_output, initial, [[0, 1], [2]]) == pytest.approx(0.25)
    # a last stage shrunk to nothing, or a single stage: nothing to compare
    assert math.isnan(optimization.depth_norm_growth([initial[0], initial[1], 0 * initial[2]], initial,
                                                     [[0, 1], [2]]))
    assert math.isnan(optimization.depth_norm_growth(initial, initial, [[0, 1, 2]]))


def test_depth_update_ratio_sees_a_starved_stem():
    """Through the monitor: a tiny convnet whose stem gets 1/1000 of the lr reads about 1/1000 of the
    healthy ratio (both measured on the same model, batch and steps)."""
    from autofix.monitor.training_signals import _stage_indices
    from reference_models.backbones import TinyConvNet

    def ratio(stem_lr_mult):
        torch.manual_seed(0)
        net = TinyConvNet(1, 8)
        weights = list(net.parameters())
        stages = _stage_indices(net, weights)
        stem = {id(p) for p in net.stages()[0]}
        groups = [{"params": [p for p in weights if id(p) in stem], "lr": 1e-2 * stem_lr_mult},
                  {"params": [p for p in weights if id(p) not in stem], "lr": 1e-2}]
        opt = torch.optim.SGD(groups, lr=1e-2)
        before = optimization.snapshot(weights)
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        return optimization.depth_update_ratio(before, weights, stages)

    healthy, starved = ratio(1.0), ratio(1e-3)
    assert healthy > 0.05
    assert starved / healthy == pytest.approx(1e-3, rel=0.05)


def test_snapshot_is_detached_copy():
    net = nn.Linear(3, 2)
    snap = optimization.snapshot(net.parameters())
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not snap[0].requires_grad
    assert optimization.update_ratio(snap, list(net.parameters())) > 0


def test_count_nonfinite():
    a = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    b = torch.tensor([[float("nan"), 0.0]])
    assert optimization.count_nonfinite(a) == 3
    assert optimization.count_nonfinite(a, None, [b, None], {"x": b}) == 5
    assert optimization.count_nonfinite(torch.arange(3), []) == 0
    net = _net_with_grads()
    assert optimization.count_nonfinite(p.grad for p in net.parameters()) == 0


# ---------------------------------------------------------------- activations

def test_dead_fraction():
    act = torch.rand(16, 4, 3, 3, generator=gen(11)) + 0.1
    act[:, 1] = 0.0
    act[:, 3] = 0.0
    assert activations.dead_fraction(act) == pytest.approx(0.5)
    # zero at one spatial position only is not "zero for that sample"
    act[:, 0, 0, 0] = 0.0
    assert activations.dead_fraction(act) == pytest.approx(0.5)
    # a channel alive on 2 of 16 samples is dead at threshold 0.8 but not at 0.99
    act[2:, 2] = 0.0
    assert activations.dead_fraction(act, threshold=0.8) == pytest.approx(0.75)
    assert activations.dead_fraction(act, threshold=0.99) == pytest.approx(0.5)
    act[0, 0, 0, 0] = float("nan")
    assert math.isnan(activations.dead_fraction(act))


def test_saturated_fraction():
    t = torch.tensor([-1.0, -0.995, 0.0, 0.5, 0.9999, 0.95, 0.3, 1.0])
    assert activations.saturated_fraction(t, "tanh") == pytest.approx(4 / 8)
    s = torch.tensor([0.0, 0.005, 0.5, 0.2, 0.999, 0.98])
    assert activations.saturated_fraction(s, "sigmoid") == pytest.approx(3 / 6)
    assert activations.saturated_fraction(s, "sigmoid", margin=0.05) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="tanh"):
        activations.saturated_fraction(t, "relu")


def test_train_eval_cosine():
    z = torch.randn(10, 4, generator=gen(12))
    assert activations.train_eval_cosine(z, 3 * z) == pytest.approx(1.0)
    assert activations.train_eval_cosine(z, -z) == pytest.approx(-1.0)
    assert activations.train_eval_cosine(torch.eye(3), torch.eye(3).roll(1, 1)) == pytest.approx(0.0)


# ---------------------------------------------------------------- method metrics

def test_contrastive_entropy_uniform_cases():
    z = torch.ones(8, 4)  # every logit equal: uniform over negatives
    assert method_metrics.contrastive_entropy(z, z.clone(), 0.1) == pytest.approx(1.0)
    # distinct one-hot rows: every negative is orthogonal, so still uniform whatever the temperature
    eye = torch.eye(8)
    assert method_metrics.contrastive_entropy(eye, eye.clone(), 0.01) == pytest.approx(1.0)


def test_contrastive_entropy_one_hard_negative_pair():
    # samples 2k and 2k+1 share a one-hot direction: each view has 2 negatives at cosine 1, the rest
    # at 0; at a low temperature the entropy is log 2 / log(2N - 2)
    n = 32
    z = torch.eye(n // 2).repeat_interleave(2, dim=0)
    h = method_metrics.contrastive_entropy(z, z.clone(), 0.02)
    assert h == pytest.approx(math.log(2) / math.log(2 * n - 2), rel=1e-3)
    assert h < 0.2


def test_contrastive_entropy_falls_with_temperature():
    a, b = torch.randn(32, 8, generator=gen(13)), torch.randn(32, 8, generator=gen(14))
    hot = method_metrics.contrastive_entropy(a, b, 10.0)
    cold = method_metrics.contrastive_entropy(a, b, 0.05)
    assert hot > 0.99 and cold < hot
    a[0, 0] = float("nan")
    assert math.isnan(method_metrics.contrastive_entropy(a, b, 0.1))


def test_ema_param_distance():
    target = [torch.tensor([3.0, 4.0])]
    assert method_metrics.ema_param_distance([torch.tensor([3.0, 4.0])], target) == 0.0
    assert method_metrics.ema_param_distance([torch.tensor([3.0, 5.0])], target) == pytest.approx(0.2)


def test_neighbour_interpolation_constant_and_noise():
    torch.manual_seed(0)
    img = torch.full((2, 3, 16, 16), 0.7)
    mask = (torch.rand(2, 16) < 0.75).float()
    mask[:, 0] = 0.0  # at least one visible patch
    mask[:, 5] = 1.0
    assert method_metrics.neighbour_interpolation_loss(img, 4, mask, norm_pix=False) == pytest.approx(0.0, abs=1e-12)
    assert method_metrics.neighbour_interpolation_loss(img, 4, mask, norm_pix=True) == pytest.approx(0.0, abs=1e-12)
    noise = torch.rand(2, 3, 16, 16, generator=gen(15))
    assert method_metrics.neighbour_interpolation_loss(noise, 4, mask, norm_pix=False) > 0.01
    assert method_metrics.neighbour_interpolation_loss(noise, 4, mask, norm_pix=True) > 0.5


def test_neighbour_interpolation_known_prediction():
    # 2x2 grid of 1-pixel patches, values [[0, 2], [4, 6]]; patch 0 masked, its visible neighbours
    # are 2 and 4 -> prediction 3, error 9. Patch 3 masked too: neighbours 2 and 4 -> 3, error 9.
    img = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert method_metrics.neighbour_interpolation_loss(img, 1, mask, norm_pix=False) == pytest.approx(9.0)
    # only patch 3 visible: patch 0 has no visible neighbour and falls back to the image mean (6)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pred = torch.tensor([[[6.0], [6.0], [6.0], [0.0]]])
    expected = masked_reconstruction(pred, patchify(img, 1), mask, norm_pix=False).item()
    assert method_metrics.neighbour_interpolation_loss(img, 1, mask, norm_pix=False) == pytest.approx(expected)


# ---------------------------------------------------------------- dynamics

def test_relative_improvement():
    assert dynamics.relative_improvement([4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert dynamics.relative_improvement(torch.ones(12)) == 0.0
    assert math.isnan(dynamics.relative_improvement([1.0, 2.0, 3.0]))


def test_progress_given_back():
    assert dynamics.progress_given_back(10.0, 2.0, 2.0) == 0.0            # at its lowest
    assert dynamics.progress_given_back(10.0, 2.0, 6.0) == pytest.approx(0.5)
    assert dynamics.progress_given_back(10.0, 2.0, 12.0) == pytest.approx(1.25)   # worse than the start
    assert math.isnan(dynamics.progress_given_back(10.0, 10.0, 11.0))     # no progress yet to give back
    assert math.isnan(dynamics.progress_given_back(10.0, 2.0, float("nan")))


def test_spikes():
    flat = [1.0] * 20
    assert dynamics.robust_spike_score(flat) == 0.0
    assert dynamics.spike_count(flat) == 0
    x = torch.linspace(2.0, 1.0, 40) + 0.01 * torch.randn(40, generator=gen(16))
    assert dynamics.spike_count(x) == 0  # a steady trend is not a spike
    x[25] = 10.0
    # the downward trend widens the MAD (about 0.25 here), so the score is about 8.5 / 0.37
    assert dynamics.robust_spike_score(x) > 15
    assert dynamics.spike_count(x) == 1
    # MAD 0 but one value differs: mean-absolute-deviation fallback, still a big score
    spike = [1.0] * 19 + [5.0]
    assert dynamics.robust_spike_score(spike) > 6
    assert dynamics.spike_count(spike) == 1
    assert math.isnan(dynamics.robust_spike_score([1.0, float("nan"), 2.0]))


def test_oscillation():
    assert dynamics.oscillation([5, 4, 3, 2, 1]) == 0.0
    assert dynamics.oscillation([1, 2, 1, 2, 1, 2]) == 1.0
    assert dynamics.oscillation([1, 2, 3, 2, 1]) == pytest.approx(1 / 3)
    assert dynamics.oscillation([3.0, 3.0, 3.0]) == 0.0
    assert math.isnan(dynamics.oscillation([1.0, 2.0]))


def test_nonfinite_inputs_give_nan_elsewhere():
    bad = torch.tensor([[1.0, float("nan")], [0.5, 2.0]])
    assert math.isnan(activations.saturated_fraction(bad))
    assert math.isnan(activations.train_eval_cosine(bad, bad))
    assert math.isnan(method_metrics.ema_param_distance([bad], [bad]))
    img = torch.rand(1, 1, 4, 4, generator=gen(19))
    img[0, 0, 1, 1] = float("inf")
    assert math.isnan(method_metrics.neighbour_interpolation_loss(img, 2, torch.tensor([[1.0, 0, 0, 1]])))
    p = nn.Parameter(torch.zeros(2, 2))
    p.grad = bad.clone()
    assert math.isnan(optimization.grad_norms([("w", p)])["global"])
    assert math.isnan(dynamics.relative_improvement([1.0, float("nan"), 2.0, 3.0]))
    assert math.isnan(dynamics.spike_count([float("inf"), 1.0]))


def test_spectrum_of_a_wide_batch_matches_the_covariance_eigenvalues():
    # the N x D shortcut (singular values of the centred batch) against the D x D covariance itself
    z = torch.randn(40, 300, generator=gen(21), dtype=torch.float64) @ torch.randn(300, 300, generator=gen(22),
                                                                                     dtype=torch.float64)
    zc = z - z.mean(dim=0)
    ev = torch.linalg.eigvalsh(zc.T @ zc / 39).flip(0).clamp_min(0)
    assert geometry.spectrum(z, k=5)["top5_explained"] == pytest.approx((ev[:5].sum() / ev.sum()).item(), rel=1e-9)


def test_correlation_stats_of_wide_embeddings():
    # 2048 dimensions in pairs of copies (|r| = 1 within a pair, about 0 across): the 1024-dimension
    # estimate of mean |corr| stays near the exact 1/2047, and the energy (exact, via the N x N Gram) near
    # its exact share
    x = torch.randn(64, 1024, generator=gen(23), dtype=torch.float64)
    out = geometry.correlation_stats(torch.cat([x, x], dim=1))
    zc = x - x.mean(dim=0)
    c = zc.T @ zc / 63
    full, diag = 4 * c.pow(2).sum(), 2 * torch.diagonal(c).pow(2).sum()
    assert out["offdiag_energy"] == pytest.approx(((full - diag) / full).item(), rel=1e-9)
    r = (c / torch.outer(torch.diagonal(c).sqrt(), torch.diagonal(c).sqrt())).abs()
    exact = (4 * r.sum() - 2 * torch.diagonal(r).sum()) / (2048 * 2047)   # every pair, copies included
    assert out["mean_abs_corr"] == pytest.approx(exact.item(), rel=0.1)


def test_perturbation_sensitivity_known_answers():
    from autofix.monitor.geometry import perturbation_sensitivity
    e = torch.eye(6)
    assert perturbation_sensitivity(e, 3.0 * e) == 0.0                       # scale is not a move
    assert perturbation_sensitivity(e, e.roll(1, dims=0)) == pytest.approx(1.0)   # lands on another input
    # every perturbed row turned 60 degrees within its own plane: cosine distance 0.5, inputs 1 apart
    half = torch.cat([e, torch.zeros(6, 6)], 1) * 0.5 + torch.cat([torch.zeros(6, 6), e], 1) * (3 ** 0.5 / 2)
    assert perturbation_sensitivity(torch.cat([e, torch.zeros(6, 6)], 1), half) == pytest.approx(0.5)
    assert math.isnan(perturbation_sensitivity(e[:1], e[:1]))


def test_duplicate_unit_share_counts_units_with_a_near_copy():
    from autofix.monitor.optimization import duplicate_unit_share
    e = torch.eye(4, 8)                                   # four orthogonal units: no duplicates
    assert duplicate_unit_share([e]) == 0.0
    copies = torch.cat([e[:2], -2.0 * e[:1], e[3:]])     # unit 2 is a sign-flipped, scaled copy of unit 0
    assert duplicate_unit_share([copies]) == 0.5          # units 0 and 2 each have a near copy
    conv = torch.ones(3, 2, 3, 3)                         # a constant init: every filter the same
    assert duplicate_unit_share([conv, e, torch.ones(5)]) == pytest.approx(3 / 7)   # biases are skipped
    assert math.isnan(duplicate_unit_share([torch.ones(1, 4)]))


def test_linear_cka_known_answers():
    x = torch.randn(200, 16, generator=gen(31), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen(32), dtype=torch.float64))
    assert geometry.linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)    # rotation, scale, shift
    # x beside as many independent unit-variance columns: the cross term keeps half the energy of each
    # side's, so CKA = ||X'X||^2 / sqrt(||X'X||^2 (||X'X||^2 + ||N'N||^2)) -> 1/sqrt(2) for large N
    big = torch.randn(20000, 8, generator=gen(33), dtype=torch.float64)
    wide = torch.cat([big, torch.randn(20000, 8, generator=gen(34), dtype=torch.float64)], 1)
    assert geometry.linear_cka(big, wide) == pytest.approx(2 ** -0.5, abs=0.01)
    unrelated = torch.randn(20000, 8, generator=gen(35), dtype=torch.float64)
    assert geometry.linear_cka(big, unrelated) < 0.01
    assert math.isnan(geometry.linear_cka(x, x[:10]))                       # not the same inputs
    assert math.isnan(geometry.linear_cka(torch.ones(5, 3), x[:5]))          # no variance


def test_stage_metrics_known_answers():
    from autofix.monitor import stages
    x = torch.randn(64, 8, generator=gen(36), dtype=torch.float64)
    y = torch.randn(64, 8, generator=gen(37), dtype=torch.float64)
    # a stage that passes its input on (x, 2x) beside one that does not (2x, y)
    m = stages.stage_metrics([x, 2 * x, y], knn=[0.5, 0.9, 0.7], knn_init=[0.6, 0.6, 0.6])
    assert m["stages/adjacent_cka_max"] == pytest.approx(1.0)
    assert m["stages/adjacent_cka_mean"] == pytest.approx((1.0 + geometry.linear_cka(x, y)) / 2)
    assert m["stages/knn_best_inner_gain"] == pytest.approx(0.2)     # the middle stage beats the output
    assert m["stages/knn_first_gain"] == pytest.approx(-0.1)
    assert "stages/knn_first_gain" not in stages.stage_metrics([x, y], [0.5, 0.6], None)
    assert stages.stage_metrics([x], [0.5], None) == {}


def test_stage_knn_splits_bank_and_queries():
    from autofix.monitor import stages
    # two stages: the first separates the classes by its first coordinate, the second carries noise
    y = torch.arange(40) % 2
    good = torch.stack([y.double() * 2 - 1, torch.zeros(40, dtype=torch.float64)], 1) + 0.01
    noise = torch.randn(40, 2, generator=gen(38), dtype=torch.float64)
    acc = stages.stage_knn([good, noise], 20, y[:20], y[20:], k=3, temperature=0.1, num_classes=2)
    assert acc[0] == 1.0 and acc[1] < 1.0


def test_stage_recorder_pools_each_stage_and_lets_go():
    from autofix.monitor import stages
    from reference_models.backbones.convnet import TinyConvNet
    net = TinyConvNet(width=4, depth=1).eval()
    x = torch.randn(3, 3, 16, 16, generator=gen(39))
    with stages.StageRecorder(net) as rec:
        with torch.no_grad():
            out = net(x)
            net(x)
    feats = rec.features()
    assert [f.shape for f in feats] == [(6, 4), (6, 4), (6, 8), (6, 16)]    # two forwards, joined
    assert torch.allclose(feats[-1][:3], out)                                # the last stage is the output
    with torch.no_grad():
        net(x)
    assert len(rec.features()[0]) == 6                                       # hooks removed on exit


def test_at_resolution_keeps_the_size_and_flat_images():
    from reference_models.augment import at_resolution
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(at_resolution(flat, 0.5), flat)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    low = at_resolution(checker.float().expand(1, 1, 16, 16), 0.5)
    assert low.shape == (1, 1, 16, 16) and torch.allclose(low, torch.full_like(low, 0.5))  # detail averaged away


def test_shifted_moves_the_picture_and_zero_fills_the_border():
    from reference_models.augment import shifted
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = shifted(x, 0.25)                                     # one pixel right and down
    assert out.shape == x.shape
    assert torch.equal(out[0, 0, 0], torch.zeros(4)) and torch.equal(out[0, 0, :, 0], torch.zeros(4))
    assert torch.equal(out[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert torch.equal(shifted(x, 0.0), x)


def test_position_share_known_answers():
    from autofix.monitor.tokens import position_share
    pos = torch.randn(1, 16, 8, generator=gen(40), dtype=torch.float64)
    content = torch.randn(50, 16, 8, generator=gen(41), dtype=torch.float64)
    assert position_share(pos.expand(50, -1, -1) + 0 * content) == pytest.approx(1.0)   # position only
    # content alone, independent of position: only the sampling noise of 50 images' means, about 1/50
    assert position_share(content) < 0.05
    # equal energy from each: about a half
    both = position_share(pos.expand(50, -1, -1) / pos.std() + content / content.std())
    assert 0.4 < both < 0.6
    assert math.isnan(position_share(content[:1])) and math.isnan(position_share(torch.zeros(4, 3, 2)))


def test_position_decodability_known_answers():
    from autofix.monitor.tokens import position_decodability
    pos = torch.randn(1, 16, 24, generator=gen(42), dtype=torch.float64)
    content = torch.randn(40, 16, 24, generator=gen(43), dtype=torch.float64)
    # position plus a little content: read off exactly; content alone: chance (1/16) within sampling noise
    assert position_decodability(pos.expand(40, -1, -1) + 0.1 * content) == 1.0
    assert position_decodability(content) < 0.2
    # loud content in its own directions does not hide a position that lives in others
    loud = torch.cat([10 * content[..., :12], pos[..., 12:].expand(40, -1, -1)], dim=-1)
    assert position_decodability(loud) == 1.0
    assert math.isnan(position_decodability(content[:3]))
