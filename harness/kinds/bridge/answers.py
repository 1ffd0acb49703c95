"""How a saved prediction is judged, from the record alone (shared by the run and the analysis)."""

from __future__ import annotations


def normalise_number(text: str) -> str:
    """A number as the answer compares it: no thousands separators, no trailing '.0'."""
    value = text.replace(",", "")
    return value[:-2] if value.endswith(".0") else value


def judge(task_type: str, record: dict, prediction) -> bool:
    """Whether a saved prediction is right, from the record alone (used when re-analysing a run)."""
    if prediction is None:
        return False
    if task_type in ("classification", "multiple_choice"):
        return prediction == record["label"]
    if task_type == "generation":
        return str(prediction) == normalise_number(record["answer"])
    return prediction == record["answer"]
