"""Diversity metrics on hand-made texts, with the values worked out by hand in the comments."""

import math

import pytest

from harness.kinds.tre_sweep.text_metrics import (bigram_diversity, char_entropy, generation_metrics, jaccard, mean_pairwise_jaccard,
                                  vocab_diversity, words)

TEXT = "The cat saw the cat. It's the cat's hat!"


def test_words_lowercase_letters_digits_and_inner_apostrophes():
    assert words(TEXT) == ["the", "cat", "saw", "the", "cat", "it's", "the", "cat's", "hat"]
    assert words("state-of-the-art x_1 don’t 'quoted' 3.14") == ["state", "of", "the", "art", "x", "1", "don't",
                                                                  "quoted", "3", "14"]
    assert words("Ünïcode ÄRGER") == ["ünïcode", "ärger"]
    assert words("... !!! ---") == []


def test_vocab_and_bigram_diversity_by_hand():
    tokens = words(TEXT)
    # 9 words; distinct: the, cat, saw, it's, cat's, hat = 6
    assert vocab_diversity(tokens) == pytest.approx(6 / 9)
    # 8 adjacent pairs; (the, cat) occurs twice, so 7 distinct
    assert bigram_diversity(tokens) == pytest.approx(7 / 8)
    assert vocab_diversity([]) is None and bigram_diversity(["one"]) is None
    assert bigram_diversity(["a", "a", "a"]) == pytest.approx(1 / 2)


def test_char_entropy_in_bits_by_hand():
    assert char_entropy("aabb") == pytest.approx(1.0)
    assert char_entropy("abcd") == pytest.approx(2.0)
    # "aaab": p = 3/4, 1/4 -> 0.75 log2(4/3) + 0.25 log2(4) = 0.811278
    assert char_entropy("aaab") == pytest.approx(0.8112781245)
    # "ab ab": a 2, b 2, space 1 of 5 -> 2 * 0.4 log2(2.5) + 0.2 log2(5) = 1.521928
    assert char_entropy("ab ab") == pytest.approx(2 * 0.4 * math.log2(2.5) + 0.2 * math.log2(5))
    assert char_entropy("Aa") == pytest.approx(1.0), "case is kept"
    assert char_entropy("zzzz") == 0.0 and char_entropy("") is None


def test_jaccard_and_its_mean_over_trial_pairs():
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) is None
    # pairs: ({a,b},{a,b}) = 1, ({a,b},{c}) = 0, ({a,b},{c}) = 0 -> 1/3
    assert mean_pairwise_jaccard([{"a", "b"}, {"a", "b"}, {"c"}]) == pytest.approx(1 / 3)
    # the empty pair is skipped: ({x},{}) = 0, ({x},{}) = 0, ({},{}) skipped -> 0
    assert mean_pairwise_jaccard([{"x"}, set(), set()]) == 0.0
    assert mean_pairwise_jaccard([{"only"}]) is None


def test_generation_metrics_bundle():
    m = generation_metrics(TEXT)
    assert m["word_count"] == 9.0 and m["vocab_diversity"] == pytest.approx(6 / 9)
    assert m["char_entropy"] == pytest.approx(char_entropy(TEXT))
    empty = generation_metrics("  ")
    assert empty["word_count"] == 0.0 and empty["vocab_diversity"] is None
