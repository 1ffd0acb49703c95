"""Fields and types shared by every spec kind."""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from registry.base import NAME_PATTERN, DType, Profile, StrictModel, suggest
from registry.catalog import dataset_catalog, model_catalog

__all__ = ["NAME_PATTERN", "DType", "Profile", "StrictModel", "suggest", "ModelName", "ModelList", "DatasetName",
           "SourceRef", "ExpectedValue", "ClaimRef", "SpecBase"]


def _known_model(name: str) -> str:
    known = sorted(model_catalog())
    if name not in known:
        raise ValueError(f"unknown model {name!r}{suggest(name, known)} (models are listed in registry/catalog/models.yaml)")
    return name


def _known_dataset(name: str) -> str:
    known = sorted(dataset_catalog())
    if name not in known:
        raise ValueError(f"unknown dataset {name!r}{suggest(name, known)} (datasets are listed in registry/catalog/datasets.yaml)")
    return name


def _unique(items: list[str]) -> list[str]:
    repeated = sorted({i for i in items if items.count(i) > 1})
    if repeated:
        raise ValueError(f"each model may appear only once; repeated: {', '.join(repeated)}")
    return items


ModelName = Annotated[str, AfterValidator(_known_model)]
ModelList = Annotated[list[ModelName], Field(min_length=1), AfterValidator(_unique)]
DatasetName = Annotated[str, AfterValidator(_known_dataset)]


class SourceRef(StrictModel):
    """Where an experiment is documented: one of the seed reports (checked against the seeds folder and its
    coverage table), or any other paper or page (`reference`: a citation or URL)."""

    seed: str | None = Field(None, description="Report file in the seeds folder, e.g. 001_2238a690a37813ca.txt")
    reference: str | None = Field(None, min_length=1, description=(
        "A paper or page that is not a seed report: a citation, arXiv id or URL"))
    sections: list[str] = Field(default_factory=list, description="Section numbers or headings used")

    @field_validator("seed")
    @classmethod
    def _seed_file(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", value):
            raise ValueError(f"seed must name a report file like '001_2238a690a37813ca.txt', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_document(self):
        if (self.seed is None) == (self.reference is None):
            raise ValueError("name the document with exactly one of `seed` (a seed report file) or `reference` "
                             "(a paper or URL); an experiment documented nowhere leaves `source` out")
        return self

    def label(self) -> str:
        """How pages name the document: the seed report's file, or the reference."""
        return self.seed or self.reference


class ExpectedValue(StrictModel):
    """A number a report gave, to be shown beside the reproduced value of `metric`."""

    metric: str = Field(description="Key in metrics.json (numbers) or a reported fact such as a norm type (text)")
    value: Union[float, str]
    section: str = Field(description="Report section the number comes from")
    note: str = ""
    profile: Profile = Field("paper", description="Profile whose models match the report's")


class ClaimRef(StrictModel):
    """A claim a report makes about this experiment, to be tested: which one (an id the spec's kind knows how to
    test), where the report makes it, its words and its own numbers. The claims engine (harness/claims.py) decides
    the verdict from the run and applies the same rule to these numbers."""

    id: str = Field(pattern=r"^[a-z0-9_]+$", description="A claim id of this spec's kind")
    section: str = Field(description="Report section the claim comes from")
    statement: str = Field("", description="The report's words (default: the kind's wording for the id)")
    reported: dict[str, Union[float, str]] = Field(default_factory=dict, description=(
        "The report's own numbers for the claim, as the kind names them (n, each compared method's rate, d, p, "
        "wins, r, ...): the engine applies its rule to them"))
    margin: float | None = Field(None, gt=0, description=(
        "Claims of no effect or of a constant: the equivalence margin, in the claim's statistic (this project's "
        "choice; the report gives none)"))
    threshold: float | None = Field(None, description=(
        "Claims of a level (a rate above or below a value): the threshold, when this project had to choose one"))
    note: str = ""


class SpecBase(StrictModel):
    """Fields every experiment spec carries."""

    name: str = Field(pattern=NAME_PATTERN, description="The spec file's name (set from it; a differing value is refused); results go to results/<name>/")
    kind: str
    description: str = Field(min_length=1)
    source: SourceRef | None = Field(None, description=(
        "Where the experiment is documented; leave it out for an experiment of your own"))
    seed: int = Field(0, ge=0, description="Seed for every random choice of the run")
    tags: list[str] = Field(default_factory=list)
    expected: list[ExpectedValue] = Field(default_factory=list)
    claims: list[ClaimRef] = Field(default_factory=list, description=(
        "The report's claims about this experiment, each tested by the claims engine (documentation: editing it "
        "reruns the analysis, not the run)"))
    profiles: dict[Profile, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-profile overrides, deep-merged over this spec when it runs under that profile",
    )

    @model_validator(mode="after")
    def _claims_need_a_source(self):
        if self.source is None and (self.claims or self.expected):
            field = "claims" if self.claims else "expected"
            raise ValueError(f"`{field}` quotes a document: name it under `source` (a seed report or a reference)")
        return self

    def model_names(self) -> list[str]:
        """Logical model names the run will load (kinds override this)."""
        return []

    def data_needs(self) -> list[tuple[str, str]]:
        """(dataset, split) pairs the run will read (kinds override this)."""
        return []

    def input_files(self) -> list[str]:
        """Files besides the spec that loading it reads, relative to the spec file (kinds override this)."""
        return []

    def code_parts(self) -> tuple[str, ...]:
        """Modules of the kind's harness package that a run of this spec loads by name (`harness.kinds.load_part`)
        beside what the executor imports; the run stage depends on these and on no other part (kinds override
        this)."""
        return ()
