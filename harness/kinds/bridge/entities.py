"""What of a question reaches the receiver's output (seed 002, GSM8K lineage: "entity transfer", "partial").

The report counts entities of the question found in the output per class (V12: numbers 0/56, names 1/59) but
never says how it found them, and never defines "partial". The choices here, without a tagger:
  numbers        every number in the question (thousands separators dropped, a trailing ".0" dropped)
  names          capitalised words that are not function words ("She", "How", "Mr"): mostly names, since
                 GSM8K questions open sentences with names or function words
  content words  lowercase words of four or more letters that are neither function words nor number words
                 (a stand-in for nouns)
An entity transfers when the output contains it (numbers by value, words case-insensitively). Totals count each
entity once per question, so an entity repeated in one question counts once.
On the first 20 GSM8K test questions these rules find 63 numbers and 22 names; the report's V12 counts are 56 and
59 over its own 20 held-out items (which ones, and by which rule, it does not say), so its per-class totals
cannot be matched exactly.
Partial: a wrong answer whose output reads as a GSM8K solution, i.e. it contains a number and either an
arithmetic expression ("3 * 4", "12 / 2 = 6", "16 - 3"; not a date like "2014-01-24") or the "####" answer marker. The report's 75% "partial
success" with outputs "unrelated to the input question" fits this reading (structure, not content).
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from harness.kinds.bridge.answers import normalise_number

NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")
# an operator with spaces around it ("9 * 2", "16 - 3"), an expression ending in "=" ("16-3-4=", "<<9*2=18>>"), or
# "= n"; so dates and timestamps ("2014-01-24T00:00+00:00") do not count
ARITHMETIC = re.compile(r"\d\s+[-+*/x×÷]\s+\$?\d|\d(?:[-+*/x×÷]\$?[\d.]+)+=|=\s*\$?-?\d")
FUNCTION_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each every few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just let me more most much my myself no nor not now of off
on once only or other our ours ourselves out over own per same she should so some such than that the their theirs
them themselves then there these they this those through to too total under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves many each half twice
mr mrs ms dr answer question solution step steps yesterday today tomorrow
""".split())
NUMBER_WORDS = frozenset("""zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
""".split())
ENTITY_CLASSES = ("numbers", "names", "content_words")


def entities(text: str) -> dict[str, set[str]]:
    """The question's entities by class (see the module docstring for the rules)."""
    numbers = {normalise_number(n) for n in NUMBER.findall(text)}
    names, content = set(), set()
    for word in map(_bare, WORD.findall(text)):
        if word.lower() in FUNCTION_WORDS or word.lower() in NUMBER_WORDS:
            continue
        if word[0].isupper():
            names.add(word)
        elif len(word) >= 4:
            content.add(word)
    return {"numbers": numbers, "names": names, "content_words": content}


def _bare(word: str) -> str:
    """A word without its possessive: "Janet's", "Janet’s" and "farmers'" -> "Janet", "Janet", "farmers"."""
    word = word.replace("’", "'")
    return word.removesuffix("'s").rstrip("'")


def transferred(question: str, output: str) -> dict[str, tuple[int, int]]:
    """Per class: (entities of the question found in the output, entities of the question)."""
    found = _question_entities(question)
    out_numbers = {normalise_number(n) for n in NUMBER.findall(output)}
    out_words = {_bare(w).lower() for w in WORD.findall(output)}
    result = {"numbers": (len(found["numbers"] & out_numbers), len(found["numbers"]))}
    for cls in ("names", "content_words"):
        result[cls] = (sum(w.lower() in out_words for w in found[cls]), len(found[cls]))
    return result


@functools.lru_cache(maxsize=4096)
def _question_entities(question: str) -> dict[str, frozenset[str]]:
    """`entities`, kept: every method and seed is scored against the same questions."""
    return {cls: frozenset(found) for cls, found in entities(question).items()}


def transfer_totals(pairs: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Matched and total entities per class over (question, output) pairs, and 'overall' for numbers + names, as
    the report's V12/V13 overall (1/115 = 56 numbers + 59 names)."""
    totals = Counter()
    for question, output in pairs:
        for cls, (hit, n) in transferred(question, output).items():
            totals[f"{cls}.hit"] += hit
            totals[f"{cls}.n"] += n
    result = {cls: (totals[f"{cls}.hit"], totals[f"{cls}.n"]) for cls in ENTITY_CLASSES}
    result["overall"] = (result["numbers"][0] + result["names"][0], result["numbers"][1] + result["names"][1])
    return result


def is_partial(output: str, correct: bool) -> bool:
    """A wrong answer that still reads as a GSM8K solution (see the module docstring)."""
    if correct or not NUMBER.search(output):
        return False
    return bool(ARITHMETIC.search(output)) or "####" in output


def output_diversity(outputs: list[str]) -> float:
    """Distinct outputs (after stripping whitespace) over outputs: the report's "Output Diversity" (V12: 20/20)."""
    return len({o.strip() for o in outputs}) / len(outputs) if outputs else 0.0
