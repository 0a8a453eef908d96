"""Losses against answers worked out by hand."""
import math

import pytest
import torch

from reference_models.losses import (
    covariance_term,
    masked_reconstruction,
    negative_cosine,
    nt_xent,
    patchify,
    variance_term,
    vicreg,
)
from reference_models.methods import momentum_at


def test_variance_term_is_zero_when_every_std_is_at_least_gamma():
    z = torch.tensor([[2.0, -3.0], [-2.0, 3.0], [2.0, 3.0], [-2.0, -3.0]])  # stds 2.31 and 3.46
    assert variance_term(z).item() == 0.0


def test_variance_term_of_a_constant_batch_is_one_minus_sqrt_eps():
    z = torch.ones(8, 4)
    assert variance_term(z, eps=1e-4).item() == pytest.approx(1 - 0.01, abs=1e-6)


def test_covariance_term_zero_for_uncorrelated_and_known_for_identical_columns():
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert covariance_term(z).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.tensor([1.0, -1.0, 2.0, -2.0])
    var = x.var().item()  # unbiased, as the loss uses
    z2 = torch.stack([x, x], dim=1)
    # two off-diagonal entries equal to var, squared, summed, divided by d = 2
    assert covariance_term(z2).item() == pytest.approx(var ** 2, rel=1e-6)


def test_vicreg_terms_and_weighting():
    torch.manual_seed(0)
    z = torch.randn(64, 16) * 3
    total, terms = vicreg(z, z.clone(), inv_weight=25, var_weight=25, cov_weight=1)
    assert terms["invariance"].item() == 0.0
    assert terms["variance"].item() == 0.0  # std about 3 in every dimension
    assert total.item() == pytest.approx(terms["covariance"].item(), rel=1e-6)
    shifted = z + 1.0
    _, t2 = vicreg(z, shifted)
    assert t2["invariance"].item() == pytest.approx(1.0, rel=1e-6)  # MSE of a shift by 1


@pytest.mark.parametrize("n,temperature", [(4, 0.5), (8, 0.1), (3, 1.0)])
def test_nt_xent_closed_form_with_orthogonal_negatives(n, temperature):
    # views i and i' are the same one-hot vector; all others are orthogonal to it
    z = torch.eye(n)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    assert nt_xent(z, z.clone(), temperature).item() == pytest.approx(expected, rel=1e-4)  # float32


def test_hard_negative_weights_follow_their_definition_and_vanish_at_beta_zero():
    """exp(beta * cos)-weighted negatives, mean weight 1 per anchor, against a plain loop over anchors."""
    torch.manual_seed(3)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    t, beta = 0.5, 2.0
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T).tolist()
    expected = 0.0
    for i in range(10):
        pos = (i + 5) % 10
        negs = [k for k in range(10) if k not in (i, pos)]
        w = [math.exp(beta * sim[i][k]) for k in negs]
        w = [len(negs) * x / sum(w) for x in w]
        denom = math.exp(sim[i][pos] / t) + sum(wk * math.exp(sim[i][k] / t) for wk, k in zip(w, negs))
        expected += -math.log(math.exp(sim[i][pos] / t) / denom) / 10
    assert nt_xent(z1, z2, t, hard_negative_beta=beta).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent(z1, z2, t, hard_negative_beta=0.0).item() == pytest.approx(nt_xent(z1, z2, t).item())
    # equally close negatives are weighted alike: the orthogonal case keeps its closed form
    eye = torch.eye(4)
    plain = math.log(1 + 6 * math.exp(-1 / t))
    assert nt_xent(eye, eye.clone(), t, hard_negative_beta=5.0).item() == pytest.approx(plain, rel=1e-4)
    # one negative close to the anchor: weighting it up raises the loss
    near = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.44, 0.0], [0.0, 0.0, 1.0]])
    assert nt_xent(near, near.clone(), t, hard_negative_beta=5.0) > nt_xent(near, near.clone(), t)


def test_a_queue_adds_its_rows_to_every_anchors_negatives():
    # orthogonal views and queue rows: log(1 + (2N - 2 + K) exp(-1/t)), the closed form with K more
    t = 0.5
    views, queue = torch.eye(6)[:3], torch.eye(6)[3:]
    with_queue = nt_xent(views, views.clone(), t, queue=queue)
    assert with_queue.item() == pytest.approx(math.log(1 + (4 + 3) * math.exp(-1 / t)), rel=1e-4)
    assert nt_xent(views, views.clone(), t, queue=queue[:0]).item() == pytest.approx(nt_xent(views, views.clone(), t).item())
    # a queued copy of an anchor is a negative as close as its positive: the loss rises by log((1+e+...)/...)
    near = nt_xent(views, views.clone(), t, queue=views[:1])
    assert near > nt_xent(views, views.clone(), t)


def test_simclr_keeps_a_first_in_first_out_queue_of_its_projections():
    from reference_models.backbones import BackboneConfig, build_backbone
    from reference_models.heads import HeadConfig
    from reference_models.methods import SimCLRConfig, build_method

    torch.manual_seed(0)
    model = build_method("simclr", build_backbone(BackboneConfig(width=8)), SimCLRConfig(queue_size=10),
                         HeadConfig(32, 16), None)
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    first = model(views, 0.0)                                    # an empty queue: plain NT-Xent
    _, (z1, z2) = model.embed(views)
    assert first.loss.item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-5)
    assert int(model.queue_filled) == 8 and int(model.queue_next) == 8
    model(views, 0.0)                                            # 8 more: 2 fill the end, 6 wrap round
    assert int(model.queue_filled) == 10 and int(model.queue_next) == 6
    z = torch.cat(model.embed(views)[1])
    assert torch.allclose(model.queue[8:], z[:2], atol=1e-5) and torch.allclose(model.queue[:6], z[2:], atol=1e-5)
    model.eval()
    model(views, 0.0)                                            # evaluation does not enqueue
    assert int(model.queue_next) == 6
    # NNCLR: with nn_positives the queue supplies each view's stand-in
    model.cfg.nn_positives = True
    z1, z2 = model.embed(views)[1]
    from reference_models.losses import nearest_neighbour_positives
    expected = nearest_neighbour_positives(z1, z2, model.queue, 0.2).item()
    assert model(views, 0.0).loss.item() == pytest.approx(expected, rel=1e-5)
    model.cfg.nn_positives = False
    # the queue's negatives carry no gradient: only the two views' embeddings get one
    model.train()
    out = model(views, 0.0)
    out.loss.backward()
    assert not model.queue.requires_grad


def test_nearest_neighbour_positives_known_answers():
    from reference_models.losses import nearest_neighbour_positives
    t = 0.5
    views = torch.eye(4)
    # the views themselves in the support: each is its own neighbour, and the other view (identical,
    # orthogonal to every other image) is picked out of 4: log(1 + 3 exp(-1/t))
    same = nearest_neighbour_positives(views, views.clone(), torch.cat([views, -views]), t)
    assert same.item() == pytest.approx(math.log(1 + 3 * math.exp(-1 / t)), rel=1e-4)
    # a support holding image 0 only: every view's neighbour is image 0, which picks image 0's other view,
    # right for image 0 (as above) and wrong for the other three: -log(1 / (e^(1/t) + 3)) each
    one = nearest_neighbour_positives(views, views.clone(), views[:1], t)
    expected = (math.log(1 + 3 * math.exp(-1 / t)) + 3 * math.log(math.exp(1 / t) + 3)) / 4
    assert one.item() == pytest.approx(expected, rel=1e-4)
    # gradients reach the views, never the support
    z1, z2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    support = torch.randn(10, 3, requires_grad=True)
    nearest_neighbour_positives(z1, z2, support, t).backward()
    assert z1.grad is not None and z2.grad is not None and support.grad is None


def test_nt_xent_is_scale_invariant():
    torch.manual_seed(1)
    a, b = torch.randn(16, 8), torch.randn(16, 8)
    assert nt_xent(a, b, 0.2).item() == pytest.approx(nt_xent(5 * a, 0.1 * b, 0.2).item(), rel=1e-5)


def test_negative_cosine_known_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert negative_cosine(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(-z, z).item() == pytest.approx(4.0)
    assert negative_cosine(z.flip(1), z).item() == pytest.approx(2.0)


def test_patchify_orders_patches_row_major():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    patches = patchify(img, 2)
    assert patches.shape == (1, 4, 4)
    assert patches[0, 0].tolist() == [0, 1, 4, 5]
    assert patches[0, 1].tolist() == [2, 3, 6, 7]
    assert patches[0, 3].tolist() == [10, 11, 14, 15]


def test_masked_reconstruction_counts_only_masked_patches():
    target = torch.zeros(1, 4, 3)
    pred = torch.zeros(1, 4, 3)
    pred[0, 0] = 1.0   # masked, error 1 per pixel
    pred[0, 1] = 10.0  # visible: must not count
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert masked_reconstruction(pred, target, mask, norm_pix=False).item() == pytest.approx(0.5)


def test_masked_reconstruction_norm_pix_and_empty_mask():
    torch.manual_seed(0)
    target = torch.randn(2, 5, 12)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = torch.ones(2, 5)
    assert masked_reconstruction(normed, target, mask, norm_pix=True).item() == pytest.approx(0.0, abs=1e-8)
    # nothing masked: 0/0 on purpose, a symptom rather than a silent zero
    assert math.isnan(masked_reconstruction(normed, target, torch.zeros(2, 5)).item())


def test_byol_momentum_schedule():
    assert momentum_at(0.99, 0.0, "cosine") == pytest.approx(0.99)
    assert momentum_at(0.99, 1.0, "cosine") == pytest.approx(1.0)
    assert momentum_at(0.99, 0.5, "cosine") == pytest.approx(0.995)
    assert momentum_at(0.99, 0.7, "constant") == 0.99


def test_vicreg_invariance_ramp_is_linear_over_its_warmup():
    from reference_models.methods.vicreg import invariance_ramp
    assert invariance_ramp(0.3, 0.0) == 1.0                       # off: full weight from the start
    assert [invariance_ramp(p, 0.2) for p in (0.0, 0.05, 0.1, 0.2, 0.9)] == pytest.approx([0, 0.25, 0.5, 1, 1])


def test_easy_positive_drop_averages_over_the_hardest_pairs_only():
    e = torch.eye(4)
    z1, z2 = torch.stack([e[0], e[1]]), torch.stack([e[0], e[2]])   # pair 0 identical, pair 1 orthogonal
    t = 0.5
    # every similarity of pair 1's rows is 0: each is a 3-way tie, log 3
    assert nt_xent(z1, z2, t, easy_positive_drop=0.5).item() == pytest.approx(math.log(3), rel=1e-6)
    easy = math.log(math.exp(1 / t) + 2) - 1 / t
    assert nt_xent(z1, z2, t).item() == pytest.approx((2 * easy + 2 * math.log(3)) / 4, rel=1e-6)
    assert nt_xent(z1, z2, t, easy_positive_drop=0.9).item() == pytest.approx(math.log(3), rel=1e-6)  # >= 1 row
