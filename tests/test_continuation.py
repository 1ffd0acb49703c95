"""Zero-shot continuation scoring (lm-evaluation-harness's multiple-choice protocol) against plain forward passes."""

import pytest
import torch

from harness.kinds.bridge.continuation import choice_logliks, encode_pair, score_items
from harness.models import load_model
from harness.models import lm as L
from registry.kinds.bridge import ContinuationSpec


@pytest.fixture(scope="module", params=["gemma3_270m", "smollm2_135m_instruct"])
def lm(request, tmp_path_factory):
    return load_model(request.param, "tiny", cache_dir=tmp_path_factory.mktemp("cache"), device=torch.device("cpu"))


def test_the_continuation_is_what_the_whole_text_adds_and_trailing_context_spaces_move_to_it(lm):
    context, continuation = encode_pair(lm, "Question: why?\nAnswer: ", "yes")
    assert context == L.tokenize(lm, "Question: why?\nAnswer:", bos=True)
    assert context + continuation == L.tokenize(lm, "Question: why?\nAnswer: yes", bos=True)


def test_choice_logliks_equal_summed_token_log_probabilities_of_each_sequence_alone(lm):
    pairs = [encode_pair(lm, "Question: a goal\nAnswer:", " " + c) for c in ("one solution", "a much longer other solution")]
    pairs.append(encode_pair(lm, "Question: x\nAnswer:", " y"))
    got = choice_logliks(lm, pairs, batch_size=2)  # right padding across rows of different lengths
    for (context, continuation), value in zip(pairs, got):
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([context + continuation])).logits[0].float(), -1)
        expected = sum(float(logp[len(context) - 1 + t, tok]) for t, tok in enumerate(continuation))
        assert value == pytest.approx(expected, abs=1e-3)


def test_acc_takes_the_highest_sum_and_acc_norm_the_highest_per_character(lm, monkeypatch):
    import harness.kinds.bridge.continuation as C

    monkeypatch.setattr(C, "choice_logliks", lambda lm, pairs, batch_size: [-4.0, -6.0])  # 4 and 12 characters
    row = score_items(lm, ContinuationSpec(context_template="Question: {question}\nAnswer:"),
                      [{"id": "q", "question": "q?", "choices": ["abcd", "abcdefghijkl"], "label": 1}],
                      [["abcd", "abcdefghijkl"]])[0]
    assert row["acc"] == 0 and row["acc_norm"] == 1 and row["chars"] == [4, 12]
