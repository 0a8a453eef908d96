"""Transformer metrics on tokens and attention maps whose answer is known."""
import math

import torch
import torch.nn.functional as F

from autofix.monitor import tokens


def test_token_similarity_of_identical_orthogonal_and_explicit_pairs():
    same = torch.randn(3, 1, 8).expand(3, 5, 8)
    assert math.isclose(tokens.token_similarity(same), 1.0, rel_tol=1e-9)
    ortho = torch.eye(4).expand(2, 4, 4)                      # each image's 4 tokens are orthogonal
    assert abs(tokens.token_similarity(ortho)) < 1e-12
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    u = F.normalize(x, dim=2)
    explicit = [float(u[b, i] @ u[b, j]) for b in range(2) for i in range(6) for j in range(6) if i != j]
    assert math.isclose(tokens.token_similarity(x), sum(explicit) / len(explicit), rel_tol=1e-9)


def test_attention_entropy_and_max_weight_of_uniform_and_one_hot_maps():
    n, h, t = 2, 3, 7
    uniform = torch.full((n, h, t, t), 1.0 / t, dtype=torch.float64)
    one_hot = torch.zeros(n, h, t, t)
    one_hot[..., 0] = 1.0
    assert math.isclose(tokens.attention_entropy(uniform), 1.0, rel_tol=1e-9)
    assert tokens.attention_entropy(one_hot) < 1e-9
    assert math.isclose(tokens.attention_max(uniform), 1.0 / t, rel_tol=1e-6)
    assert math.isclose(tokens.attention_max(one_hot), 1.0)


def test_head_redundancy_is_one_for_identical_heads_and_lower_for_different_ones():
    t = 5
    one = torch.softmax(torch.randn(2, 1, t, t), dim=-1)
    assert math.isclose(tokens.head_redundancy(one.expand(2, 4, t, t)), 1.0, rel_tol=1e-9)
    eye = torch.eye(t)
    shifted = torch.roll(eye, 1, dims=1)                      # each head attends to a different single key
    maps = torch.stack([eye, shifted])[None]
    assert abs(tokens.head_redundancy(maps)) < 1e-12
    assert math.isnan(tokens.head_redundancy(one))            # one head: nothing to compare


def test_attention_static_share_known_answers():
    t = 5
    one = torch.softmax(torch.randn(1, 2, t, t, dtype=torch.float64), dim=-1)
    assert math.isclose(tokens.attention_static_share(one.expand(6, 2, t, t)), 1.0, rel_tol=1e-9)  # same maps
    # two images attending to opposite keys: centred, their maps cancel and nothing is shared
    eye = torch.eye(t, dtype=torch.float64)
    mirrored = torch.stack([eye, torch.roll(eye, 1, dims=1)])[:, None]
    pair = tokens.attention_static_share(mirrored)
    centred = mirrored - 1.0 / t
    expected = centred.mean(0).pow(2).sum() / centred.pow(2).sum(dim=(1, 2, 3)).mean()
    assert math.isclose(pair, expected.item(), rel_tol=1e-9) and pair < 0.5
    # unrelated sharp maps of many images: only the sampling noise of their mean, about 1/N
    g = torch.Generator().manual_seed(0)
    many = torch.softmax(5 * torch.randn(200, 2, t, t, generator=g, dtype=torch.float64), dim=-1)
    assert tokens.attention_static_share(many) < 0.03
    uniform = torch.full((4, 2, t, t), 1.0 / t)
    assert math.isnan(tokens.attention_static_share(uniform))         # no pattern to share
    assert math.isnan(tokens.attention_static_share(one))             # one image: nothing to compare


def test_attention_probs_match_the_blocks_own_attention():
    from reference_models.backbones.vit import Block
    torch.manual_seed(0)
    n, t, heads, d = 2, 6, 2, 8
    for kw in ({}, {"attn_scale": 5.0, "qk_norm": True}):
        block = Block(d, heads, 2.0, "layer", "gelu", 0.0, 0.0, True, **kw).eval()
        x = torch.randn(n, t, d)
        q, k, v = block.split_heads(block.qkv(x))
        probs = tokens.attention_probs(q, k, block.scale)
        assert probs.shape == (n, heads, t, t) and torch.allclose(probs.sum(-1), torch.ones(n, heads, t))
        expected = block.proj((probs @ v).transpose(1, 2).reshape(n, t, d))
        assert torch.allclose(expected, block.attention(x), atol=1e-5)


def test_non_finite_input_gives_nan():
    bad = torch.full((1, 2, 3, 3), float("nan"))
    assert math.isnan(tokens.attention_entropy(bad)) and math.isnan(tokens.attention_max(bad))
    assert math.isnan(tokens.head_redundancy(bad)) and math.isnan(tokens.token_similarity(bad[0]))
