"""How a saved prediction is judged, from the record alone (shared by the run and the analysis)."""

from __future__ import annotations

import re

NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
FINAL_MARKER = "####"


def normalise_number(text: str) -> str:
    """A number as the answer compares it: no thousands separators, no trailing '.0'."""
    value = text.replace(",", "")
    return value[:-2] if value.endswith(".0") else value


def final_number(text: str) -> str | None:
    """A GSM8K-style final answer: the first number after the last '####', else the last number in the text."""
    if FINAL_MARKER in text:
        match = re.search(NUMBER, text.rsplit(FINAL_MARKER, 1)[1])
        if match:
            return normalise_number(match.group(0).rstrip("."))
    numbers = re.findall(NUMBER, text)
    return normalise_number(numbers[-1]) if numbers else None


def judge(task_type: str, record: dict, prediction) -> bool:
    """Whether a saved prediction is right, from the record alone (used when re-analysing a run)."""
    if prediction is None:
        return False
    if task_type in ("classification", "multiple_choice"):
        return prediction == record["label"]
    if task_type == "generation":
        return str(prediction) == normalise_number(record["answer"])
    return prediction == record["answer"]
