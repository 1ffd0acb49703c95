"""Per-row temperature / top-k / top-p filtering, inverse-CDF draws, NaN masking, random streams."""

import math

import torch

from harness.kinds.tre_sweep.sampling import draw, filter_logits, invalid_prob_rows, mask_nonfinite, stream_seed, uniform_stream

P = [0.4, 0.3, 0.15, 0.1, 0.05]


def _full(candidates, vocab: int) -> torch.Tensor:
    """Candidate probabilities scattered back to (B, vocab)."""
    out = torch.zeros(candidates.probs.shape[0], vocab)
    return out.scatter(1, candidates.token_ids, candidates.probs)


def test_per_row_filters_on_a_hand_made_batch():
    logits = torch.log(torch.tensor([P, P, P, P]))
    temperature = torch.tensor([1.0, 1.0, 0.5, 1.0])
    top_k = torch.tensor([5, 3, 5, 1])
    top_p = torch.tensor([0.7, 1.0, 0.8, 0.9])
    probs = _full(filter_logits(logits, temperature, top_k, top_p), 5)
    # row 0: mass above each token 0, .4, .7, ... -> keep the first two: .4/.7, .3/.7
    torch.testing.assert_close(probs[0], torch.tensor([4 / 7, 3 / 7, 0, 0, 0]))
    # row 1: top-3, top_p = 1 keeps all three, renormalised over .85
    torch.testing.assert_close(probs[1], torch.tensor([.4 / .85, .3 / .85, .15 / .85, 0, 0]))
    # row 2: temperature 0.5 squares the probabilities: .16, .09, .0225, .01, .0025 (sum .285);
    # mass above: 0, .561, .877 -> keep two: .16/.25, .09/.25
    torch.testing.assert_close(probs[2], torch.tensor([0.64, 0.36, 0, 0, 0]))
    # row 3: top_k = 1 is greedy whatever top_p says
    torch.testing.assert_close(probs[3], torch.tensor([1.0, 0, 0, 0, 0]))


def test_top_p_after_top_k_renormalises_like_transformers():
    """Same result as transformers' Temperature -> TopK -> TopP warpers, row by row."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 300, generator=generator) * 3
    temperature = torch.tensor([0.6, 0.7, 0.8, 1.0, 0.65, 0.75])
    top_k = torch.tensor([10, 50, 37, 300, 1, 25])
    top_p = torch.tensor([0.9, 0.95, 0.999, 0.85, 0.9, 1.0])
    ours = _full(filter_logits(logits, temperature, top_k, top_p), 300)
    for i in range(6):
        scores = logits[i:i + 1].clone()
        scores = TemperatureLogitsWarper(float(temperature[i]))(None, scores)
        scores = TopKLogitsWarper(int(top_k[i]))(None, scores)
        if top_p[i] < 1:
            scores = TopPLogitsWarper(float(top_p[i]))(None, scores)
        torch.testing.assert_close(ours[i], torch.softmax(scores, dim=-1)[0], atol=1e-6, rtol=1e-5)


def test_inverse_cdf_draw():
    from harness.kinds.tre_sweep.sampling import Candidates

    cands = Candidates(torch.tensor([[7, 3, 9]] * 5), torch.tensor([[0.5, 0.3, 0.2]] * 5))
    u = torch.tensor([0.1, 0.5, 0.79, 0.81, 0.9999])
    assert draw(cands, u).tolist() == [7, 3, 3, 9, 9]
    # a zero-probability suffix is never drawn, even at u -> 1
    zero_tail = Candidates(torch.tensor([[1, 2, 3]]), torch.tensor([[0.6, 0.4, 0.0]]))
    assert draw(zero_tail, torch.tensor([0.99999994])).tolist() == [2]


def test_draw_frequencies_follow_the_filtered_distribution():
    from harness.kinds.tre_sweep.sampling import Candidates

    logits = torch.log(torch.tensor([P]))
    cands = filter_logits(logits, torch.tensor([1.0]), torch.tensor([3]), torch.tensor([1.0]))
    n = 20000
    many = Candidates(cands.token_ids.expand(n, -1), cands.probs.expand(n, -1))
    counts = torch.bincount(draw(many, uniform_stream(123, (n,))), minlength=5)
    freq = counts.float() / counts.sum()
    torch.testing.assert_close(freq[:3], torch.tensor([.4, .3, .15]) / .85, atol=0.015, rtol=0)
    assert counts[3:].sum() == 0


def test_mask_nonfinite_drops_nan_and_inf_and_finds_dead_rows():
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[1.0, nan, 2.0], [nan, nan, -inf], [inf, 0.0, 1.0], [0.0, 1.0, 2.0]])
    clean, affected, dead = mask_nonfinite(logits)
    assert affected.tolist() == [True, True, True, False]
    assert dead.tolist() == [False, True, False, False]
    assert clean[0].tolist() == [1.0, -inf, 2.0] and clean[2].tolist() == [-inf, 0.0, 1.0]
    assert torch.isfinite(clean[1]).all(), "a dead row is neutralised so the batch math stays finite"
    probs = filter_logits(clean, torch.ones(4), torch.full((4,), 3), torch.ones(4)).probs
    assert not invalid_prob_rows(probs).any()
    assert invalid_prob_rows(torch.tensor([[0.5, nan], [1.2, -0.2], [0.5, 0.5]])).tolist() == [True, True, False]


def test_streams_are_stable_private_and_in_range():
    assert stream_seed("a", 0, "p", 1) == stream_seed("a", 0, "p", 1) != stream_seed("a", 0, "p", 2)
    assert 0 <= stream_seed("x") < 2**63
    a, b = uniform_stream(5, (1000,)), uniform_stream(5, (1000,))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) < 1
    torch.manual_seed(0)
    assert torch.equal(uniform_stream(5, (10,)), a[:10]), "the global RNG state does not matter"
    assert math.isclose(float(uniform_stream(9, (20000,)).mean()), 0.5, abs_tol=0.01)
