"""The pydantic base model and literal types every part of the registry shares (imports nothing of it)."""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict

Profile = Literal["tiny", "local", "paper"]
PROFILES: tuple[str, ...] = ("tiny", "local", "paper")
DType = Literal["float32", "bfloat16", "float16"]
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class StrictModel(BaseModel):
    """Unknown fields are errors; numbers written as strings ('2e-05') are coerced."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
