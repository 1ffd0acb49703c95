"""Batched, prefixed and tree-attention paths give what a plain forward pass of each row gives."""

import pytest
import torch

from harness.models import decoding as D
from harness.models import lm as L
from harness.models import load_model

CPU = torch.device("cpu")
MODELS = ["llama31_8b", "gemma3_270m", "gemma2_9b", "pythia_6_9b", "mixtral_8x22b_instruct"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {name: load_model(name, "tiny", cache_dir=cache, device=CPU) for name in MODELS}


def _reference_last_logits(m, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return m.model(torch.tensor([ids])).logits[0, -1].float()


def _reference_score(m, prompt: list[int], candidate: list[int]) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(m.model(torch.tensor([prompt + candidate])).logits[0].float(), -1)
    return sum(float(logp[len(prompt) - 1 + t, candidate[t]]) for t in range(len(candidate)))


TEXTS = ["short one", "a considerably longer prompt than the others here", "mid length", "x"]
LONG = "The long preamble that pushes the prompt past the sliding window of the tiny Gemma models. " * 2


@pytest.mark.parametrize("name", MODELS)
def test_left_padded_batch_matches_each_row_alone(models, name):
    m = models[name]
    rows = [L.tokenize(m, t, bos=True) for t in TEXTS]
    enc = D.encode(m, [L.embed(m, torch.tensor(r)) for r in rows])
    generated = D.greedy_generate(m, enc, 5, set())
    for i, ids in enumerate(rows):
        torch.testing.assert_close(enc.last_logits[i], _reference_last_logits(m, ids), atol=1e-4, rtol=1e-4)
        alone = D.encode(m, [L.embed(m, torch.tensor(ids))])
        assert D.greedy_generate(m, alone, 5, set())[0] == generated[i]


@pytest.mark.parametrize("name", MODELS)
def test_prefix_cache_matches_the_concatenated_sequence(models, name):
    m = models[name]
    prefix_ids = L.tokenize(m, LONG, bos=True)
    prefix = D.encode_prefix(m, L.embed(m, torch.tensor([prefix_ids])))
    rows = [L.tokenize(m, t) for t in TEXTS]
    enc = D.encode(m, [L.embed(m, torch.tensor(r)) for r in rows], prefix)
    for i, ids in enumerate(rows):
        torch.testing.assert_close(enc.last_logits[i], _reference_last_logits(m, prefix_ids + ids), atol=1e-4, rtol=1e-4)



@pytest.mark.parametrize("name", MODELS)
def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(models, name):
    m = models[name]
    rows = [L.tokenize(m, t, bos=True) for t in TEXTS]
    alone = [D.greedy_generate(m, D.encode(m, [L.embed(m, torch.tensor(r))]), 6, set())[0] for r in rows]
    stops = {alone[0][1], alone[2][3]}  # row 0 stops at its second token, row 2 by its fourth at the latest
    generated = D.greedy_generate(m, D.encode(m, [L.embed(m, torch.tensor(r)) for r in rows]), 6, stops)
    for i, ids in enumerate(rows):
        expected = D.greedy_generate(m, D.encode(m, [L.embed(m, torch.tensor(ids))]), 6, stops)[0]
        assert generated[i] == expected
    assert len(generated[0]) == alone[0].index(alone[0][1]) and len(generated[2]) <= 3

@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("long_prompt", [False, True], ids=["short", "past-the-window"])
def test_best_candidates_is_the_exact_argmax(models, name, long_prompt):
    m = models[name]
    labels = [" yes\n", " no thanks\n", " no way\n", " maybe so\n", " y\n", " nothing at all\n"]
    cands = [L.tokenize(m, s) for s in labels]
    prompts = [L.tokenize(m, (LONG if long_prompt else "") + t, bos=True) for t in TEXTS]
    enc = D.encode(m, [L.embed(m, torch.tensor(p)) for p in prompts])
    best = D.best_candidates(m, enc, D.CandidateTrie(cands), round_tokens=3)
    for i, prompt in enumerate(prompts):
        scores = [_reference_score(m, prompt, c) for c in cands]
        assert best[i][0] == max(range(len(scores)), key=scores.__getitem__)
        assert best[i][1] == pytest.approx(max(scores), abs=1e-3)


def test_candidate_trie_rejects_ambiguous_candidates():
    with pytest.raises(ValueError, match="prefix of another"):
        D.CandidateTrie([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="distinct"):
        D.CandidateTrie([[1], [1]])
