"""The GSM8K lineage's heads and auxiliary losses, each against a value computed by hand."""

import math

import pytest
import torch
from torch.nn import functional as F

from harness.kinds.bridge.auxiliary import (BagOfWordsHead, ReconstructionHead, anchor, chance_info_nce, info_nce,
                                            masked_mean, reconstruction_cosine, token_weights)
from harness.kinds.bridge.modules import OutputScaling


def test_heads_bound_or_normalise_and_scale():
    raw = torch.tensor([[[3.0, -4.0, 0.0, 1.0]]])
    assert torch.allclose(OutputScaling("tanh", 0.03, True)(raw), 0.03 * torch.tanh(raw))
    rms = OutputScaling("rms", 2.0, True)(raw)
    assert torch.allclose(rms.pow(2).mean(-1).sqrt(), torch.tensor([[2.0]]), atol=1e-4)
    ln = OutputScaling("layernorm_tanh", 0.5, True, 4)(raw)
    assert ln.abs().max() <= 0.5 and torch.allclose(ln, 0.5 * torch.tanh(F.layer_norm(raw, (4,))), atol=1e-6)
    assert torch.equal(OutputScaling("scale", 3.0, True)(raw), 3 * raw)
    assert torch.equal(OutputScaling("none", 3.0, True)(raw), raw)
    assert OutputScaling("tanh", 0.03, True).scale.requires_grad  # learnable, its trajectory is recorded
    assert not OutputScaling("tanh", 0.03, False).scale.requires_grad


def test_masked_mean_ignores_padding():
    states = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(states, torch.tensor([[1, 1, 0]])).item() == 2.0


def test_info_nce_is_ln_batch_for_identical_tokens_and_near_zero_for_distinct_ones():
    same = torch.ones(8, 3, 16)
    assert info_nce(same).item() == pytest.approx(math.log(8)) == pytest.approx(chance_info_nce(8))
    distinct = torch.eye(8)[:, None, :].expand(8, 3, 8)  # orthogonal items
    assert info_nce(distinct).item() < 1e-3


def test_anchor_mse_is_tiny_under_a_scale_mismatch_and_cosine_is_not():
    """Section 15's bug: soft tokens at +-0.003 against embeddings at +-0.03 give an MSE near 1e-6."""
    torch.manual_seed(0)
    soft = 0.003 * torch.randn(4, 5, 32)
    answer = 0.03 * torch.randn(4, 7, 32)
    assert anchor(soft, answer, None, "mse").item() < 1e-3  # no usable gradient beside an LM loss of ~2
    assert anchor(soft, answer, None, "cosine").item() > 0.5
    assert anchor(answer[:, :5], answer[:, :5], None, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="anchor distance"):
        anchor(soft, answer, None, "l1")


def test_reconstruction_losses():
    source = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 50.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert reconstruction_cosine(torch.tensor([[[2.0, 0.0]]]), source, mask).item() == pytest.approx(0.0, abs=1e-6)
    head = ReconstructionHead(3, 2)
    with torch.no_grad():
        head.project.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        head.project.bias.zero_()
    raw = torch.tensor([[[1.0, 0.0, 9.0], [1.0, 0.0, -9.0]]])
    assert head.loss(raw, source, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_bag_of_words_targets_are_the_questions_tokens():
    head = BagOfWordsHead(2, 6)
    with torch.no_grad():
        head.classify.weight.zero_()
        head.classify.bias.copy_(torch.tensor([-9.0, 9.0, -9.0, 9.0, -9.0, -9.0]))  # predicts tokens 1 and 3
    raw = torch.randn(1, 4, 2)
    right = head.loss(raw, torch.tensor([[1, 3, 3, 5]]), torch.tensor([[1, 1, 1, 0]]))  # 5 is padding
    wrong = head.loss(raw, torch.tensor([[1, 3, 3, 5]]), torch.tensor([[1, 1, 1, 1]]))
    assert right.item() < 1e-3 and wrong.item() > 1.0


def test_token_weights_boost_each_rows_first_tokens():
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    weights = token_weights(mask, first=2, weight=100.0)
    assert weights.tolist() == [[0, 100, 100, 1, 1], [100, 100, 1, 0, 0]]
