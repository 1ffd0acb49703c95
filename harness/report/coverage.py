"""Which part of each seed report is a spec: registry/seed_sections.yaml, read and checked, for the coverage page."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, TypeAdapter

import registry
from registry.base import StrictModel
from registry.yaml_io import parse_yaml

SEED_SECTIONS = Path(registry.__file__).parent / "seed_sections.yaml"


class SeedSections(StrictModel):
    """One group of a seed report's sections and what encodes it."""

    seed: str = Field(pattern=r"^\d{3}$")
    sections: str = Field(min_length=1)
    experiment: str = ""
    specs: list[str] = Field(default_factory=list)
    also: list[str] = Field(default_factory=list, description="Other files that encode it: base specs, pages, benchmarks")
    note: str = ""
    status: str = Field(pattern=r"^(encoded\b.*|not encoded: \S.*)$")


def seed_sections(path: Path = SEED_SECTIONS) -> list[SeedSections]:
    return TypeAdapter(list[SeedSections]).validate_python(parse_yaml(path.read_text(encoding="utf-8"), str(path)))
