"""The discrete bottlenecks of seed 002's phase 15: nearest codes, straight-through gradients, the VQ loss,
usage statistics, FSQ's levels, and which diversity terms do and do not carry a gradient."""

import math

import pytest
import torch

from harness.kinds.bridge.quantizers import FSQ, VectorQuantizer, fsq_z_variance


def _quantizer(book: list[list[float]], **kwargs) -> VectorQuantizer:
    vq = VectorQuantizer(len(book), len(book[0]), **kwargs)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor(book))
    return vq


def test_nearest_code_by_l2_and_by_cosine_differ_where_they_should():
    book = [[1.0, 0.0], [10.0, 1.0]]
    x = torch.tensor([[[9.0, 0.0], [0.5, -0.05]]])
    # L2: (9, 0) is nearest to (10, 1); by angle it is nearest to (1, 0). (0.5, -0.05): (1, 0) both ways.
    assert _quantizer(book, distance="l2")(x).codes.tolist() == [[1, 0]]
    assert _quantizer(book, distance="cosine")(x).codes.tolist() == [[0, 0]]


def test_vq_loss_is_codebook_plus_commitment_and_gradients_pass_straight_through():
    vq = _quantizer([[0.0, 0.0], [1.0, 1.0]])
    x = torch.tensor([[[0.9, 0.7], [0.1, -0.2]]], requires_grad=True)
    out = vq(x)
    chosen = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert torch.equal(out.tokens.detach(), chosen)
    mse = float(((chosen - x.detach()) ** 2).mean())
    assert out.loss.item() == pytest.approx(mse * 1.25)
    out.tokens.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through: d tokens / d x = identity


def test_usage_statistics():
    vq = _quantizer([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    uniform = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]]])
    out = vq(uniform)
    assert out.perplexity == pytest.approx(4.0, rel=1e-4) and out.codes_used == 4 and out.diversity == 1.0
    collapsed = vq(torch.tensor([[[2.0, 0.1], [3.0, 0.0], [1.0, -0.1], [5.0, 0.0]]]))
    assert collapsed.perplexity == pytest.approx(1.0, rel=1e-4) and collapsed.codes_used == 1
    assert collapsed.diversity == 0.25


def test_codebook_initialisations():
    assert VectorQuantizer(4096, 8).codebook.weight.abs().max() <= 1 / 4096  # the report's first, tiny codebook
    unit = VectorQuantizer(64, 8, init="unit").codebook.weight
    assert torch.allclose(unit.norm(dim=1), torch.ones(64), atol=1e-6)
    assert VectorQuantizer(64, 8, init="normal").codebook.weight.std() > 0.5
    assert isinstance(VectorQuantizer(4, 8, pre_norm=True).norm, torch.nn.LayerNorm)


def test_the_entropy_bonus_on_hard_usage_moves_no_encoder_gradient_and_the_soft_one_does():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)

    def grad(**kwargs):
        torch.manual_seed(1)
        vq = VectorQuantizer(8, 4, init="normal", **kwargs)
        inp = x.clone().requires_grad_(True)
        vq(inp).loss.backward()
        return inp.grad

    plain = grad()
    assert torch.equal(grad(entropy_weight=0.1), plain)  # the report's bonus: usage histogram, no gradient
    assert not torch.allclose(grad(entropy_weight=0.1, entropy_from="soft"), plain)
    out = VectorQuantizer(8, 4, entropy_weight=0.1)(x)
    assert out.loss < VectorQuantizer(8, 4)(x).loss + 1  # subtracted, normalised to [0, 1]


def test_fsq_levels_are_the_reports_values():
    fsq = FSQ([8], dim=1)
    values, index = fsq.quantize(torch.linspace(-6, 6, 401)[:, None])
    # section 48: {-1, -0.71, -0.43, -0.14, 0.14, 0.43, 0.71, 1}
    assert sorted({round(v, 2) for v in values.flatten().tolist()}) == [-1.0, -0.71, -0.43, -0.14, 0.14, 0.43, 0.71, 1.0]
    assert index.min() == 0 and index.max() == 7
    five, _ = FSQ([5], dim=1).quantize(torch.linspace(-6, 6, 401)[:, None])
    assert sorted(set(five.flatten().tolist())) == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_fsq_counts_distinct_codes_even_beyond_integer_range():
    torch.manual_seed(0)
    fsq = FSQ([5] * 32, dim=16)  # 5^32 codes: more than an int64 holds
    out = fsq(torch.randn(2, 6, 16))
    assert out.diversity == 1.0 and out.codes_used == 12
    same = fsq(torch.randn(1, 1, 16).expand(2, 6, 16))
    assert same.diversity == pytest.approx(1 / 12) and same.codes_used == 1 and same.perplexity == pytest.approx(1.0)


def test_fsq_unique_code_term_has_no_gradient_and_the_variance_term_does():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    bugged = FSQ([5] * 8, dim=16, unique_code_weight=0.1)
    out = bugged(torch.randn(1, 1, 16).expand(2, 6, 16).requires_grad_())  # collapsed: one code of 12 tokens
    assert out.loss.item() == pytest.approx(0.1 * -math.log(out.diversity + 1e-8), rel=1e-6)
    assert not out.loss.requires_grad  # section 51: "the diversity loss had NO GRADIENT PATH"
    fixed = FSQ([5] * 8, dim=16, variance_weight=0.1)
    out = fixed(x)
    out.loss.backward()
    assert fixed.down.weight.grad is not None and fixed.down.weight.grad.abs().sum() > 0
    assert out.loss.item() == pytest.approx(0.1 * -math.log(fsq_z_variance(out.values) + 1e-8), rel=1e-5)
    assert fsq_z_variance(bugged(torch.randn(1, 1, 16).expand(2, 6, 16)).values) < 1e-10  # one code: no variance


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="distance must be"):
        VectorQuantizer(4, 2, distance="dot")
    with pytest.raises(ValueError, match="init must be"):
        VectorQuantizer(4, 2, init="zeros")
    with pytest.raises(ValueError, match="entropy_from must be"):
        VectorQuantizer(4, 2, entropy_from="logits")
    with pytest.raises(ValueError, match="at least 2"):
        FSQ([8, 1], dim=4)
