"""Diversity metrics of generated text (definitions in registry/kinds/tre_sweep.py).

Words are maximal runs of Unicode letters or digits, lowercased, with inner apostrophes kept
("It's" -> "it's", "state-of-the-art" -> four words, "x_1" -> "x", "1"). A metric without
enough words is None, never 0, so empty generations do not pull means down.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import combinations

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    return [w.replace("’", "'") for w in WORD.findall(text.lower())]


def vocab_diversity(tokens: list[str]) -> float | None:
    """Distinct words / words (type-token ratio)."""
    return len(set(tokens)) / len(tokens) if tokens else None


def bigram_diversity(tokens: list[str]) -> float | None:
    """Distinct adjacent-word pairs / adjacent-word pairs."""
    pairs = list(zip(tokens, tokens[1:]))
    return len(set(pairs)) / len(pairs) if pairs else None


def char_entropy(text: str) -> float | None:
    """Shannon entropy (bits) of the character frequencies of the text as written."""
    if not text:
        return None
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) + 0.0


def jaccard(a: set, b: set) -> float | None:
    union = a | b
    return len(a & b) / len(union) if union else None


def mean_pairwise_jaccard(vocabularies: list[set]) -> float | None:
    """Mean Jaccard similarity over all pairs (pairs whose union is empty are skipped)."""
    values = [j for a, b in combinations(vocabularies, 2) if (j := jaccard(a, b)) is not None]
    return sum(values) / len(values) if values else None


def generation_metrics(text: str) -> dict:
    tokens = words(text)
    return {
        "vocab_diversity": vocab_diversity(tokens),
        "bigram_diversity": bigram_diversity(tokens),
        "char_entropy": char_entropy(text),
        "word_count": float(len(tokens)),
    }
