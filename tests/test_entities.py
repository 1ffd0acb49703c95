"""Entity transfer, "partial" and output diversity for open answers (GSM8K lineage), on hand-made texts."""

import pytest

from harness.kinds.bridge.entities import entities, is_partial, output_diversity, transfer_totals, transferred

QUESTION = ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins for Melanie with 4. "
            "She sells the remainder at the farmers' market for $2 per egg, 1,000 days a year.")


def test_entities_by_class():
    found = entities(QUESTION)
    assert found["numbers"] == {"16", "4", "2", "1000"}
    assert found["names"] == {"Janet", "Melanie"}  # "She" is a function word; possessives are stripped
    assert {"ducks", "eggs", "breakfast", "muffins", "remainder", "farmers", "market"} <= found["content_words"]
    assert not {"three", "she", "for", "the", "per"} & found["content_words"]  # number and function words


def test_an_entity_transfers_when_the_output_contains_it():
    output = "Janet has 16 ducks and sells 1000 eggs at the market. 16 - 3 - 4 = 9. #### 18"
    result = transferred(QUESTION, output)
    assert result["numbers"] == (3, 4)  # 16, 4 and 1000 (written without its comma); not 2
    assert result["names"] == (1, 2)
    hit, total = result["content_words"]
    assert total == len(entities(QUESTION)["content_words"]) and hit == 4  # ducks, eggs, sells, market
    assert transferred(QUESTION, "") == {"numbers": (0, 4), "names": (0, 2), "content_words": (0, total)}


def test_totals_add_up_and_overall_is_numbers_plus_names():
    totals = transfer_totals([(QUESTION, "Janet 16"), (QUESTION, "Melanie 2 4")])
    assert totals["numbers"] == (3, 8) and totals["names"] == (2, 4)
    assert totals["overall"] == (5, 12)


@pytest.mark.parametrize("output, correct, partial", [
    ("16 - 3 - 4 = 9, so 9 * 2 = 18. #### 18", False, True),
    ("She makes 9 * 2 dollars", False, True),
    ("#### 7", False, True),
    ("The best way to get there. ### you can. ### you can", False, False),  # V12's output: no number
    ("I have 3 apples", False, False),  # a number, but no solution structure
    ("2014-01-24T00:00:00+00:00", False, False),  # a date is not arithmetic
    ("1.1.1.1.1.1", False, False),
    ("<<16-3-4=9>>9 eggs", False, True),
    ("9 * 2 = 18 #### 18", True, False),  # right answers are not partial
])
def test_partial_is_a_wrong_answer_shaped_like_a_solution(output, correct, partial):
    assert is_partial(output, correct) is partial


def test_output_diversity():
    assert output_diversity(["a", "b", " a ", "c"]) == 0.75
    assert output_diversity([]) == 0.0
