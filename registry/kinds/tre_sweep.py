"""TRE sweep (seed 000): per-token temperature, top-p and top-k driven by a middle layer's activations.

The controller and the metrics are defined in TRESweepSpec's docstring, which `harness schema` shows.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, StrictFloat, StrictInt, ValidationError, ValidationInfo, field_validator, model_validator

from registry.errors import SpecError, format_validation_error, short
from registry.yaml_io import MAX_YAML_BYTES, parse_yaml
from registry.common import NAME_PATTERN, DType, ModelList, SpecBase, StrictModel, suggest

REPORT_CATEGORIES = ("creative", "metacognitive", "technical", "self_awareness", "analytical",
                     "conversational", "philosophical")
CONDITIONS = ("neural", "random", "baseline")
Condition = Literal["neural", "random", "baseline"]
Direction = Literal["up", "down"]


class CategorisedPrompt(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Short identifier, unique in the file")
    category: str = Field(pattern=NAME_PATTERN)
    text: str = Field(min_length=1)


class PromptFile(StrictModel):
    """Layout of a prompts file: `prompts: [{id, category, text}, ...]`."""

    description: str = ""
    prompts: list[CategorisedPrompt] = Field(min_length=1)


def prompt_file_path(spec_dir: Path, name: str) -> Path:
    """`name` resolved against the spec's folder; like `extends:`, it must stay inside that folder."""
    path = Path(spec_dir) / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(Path(spec_dir).resolve()):
        raise ValueError(f"{short(name)} is outside the spec's folder {spec_dir}; name a prompts file in that folder "
                         f"or below it (a relative path such as prompts/tre_prompts.yaml)")
    return path


def read_prompt_file(path: Path) -> list[CategorisedPrompt]:
    """Prompts from a YAML file; any problem is one ValueError line naming the file (never its contents)."""
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes; prompt files are limited to {MAX_YAML_BYTES:,}")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    try:
        prompts = PromptFile.model_validate(raw if isinstance(raw, dict) else {"prompts": raw}).prompts
    except ValidationError as exc:
        err = format_validation_error(exc)
        raise ValueError(f"{path}: {err.field + ': ' if err.field else ''}{err.message}") from None
    ids = [p.id for p in prompts]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{path}: prompt ids must be unique; repeated: {', '.join(repeated)}")
    return prompts


def check_categories(prompts: list[CategorisedPrompt], categories: list[str], per_category: int | None,
                     where: str) -> None:
    counts = Counter(p.category for p in prompts)
    for prompt in prompts:
        if prompt.category not in categories:
            raise ValueError(f"{where}: prompt {prompt.id!r} has category {prompt.category!r}, which is not in "
                             f"`categories`{suggest(prompt.category, categories)}")
    for category in categories:
        if counts[category] == 0:
            raise ValueError(f"{where}: no prompt has category {category!r}")
        if per_category is not None and counts[category] != per_category:
            raise ValueError(f"{where}: category {category!r} has {counts[category]} prompts, "
                             f"expected {per_category} (prompts_per_category)")


class FloatRange(StrictModel):
    lo: float
    hi: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo:g}) must not exceed hi ({self.hi:g})")
        return self


class IntRange(StrictModel):
    lo: int = Field(ge=1)
    hi: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")
        return self


SAMPLING_PARAMS = ("temperature", "top_p", "top_k")  # the per-token parameters a controller sets


class Ranges(StrictModel):
    """Where the neural mapping and the random condition may put each parameter (inclusive).

    The defaults are the narrowest round ranges that hold every value the report saw TRE choose
    (temperature 0.601-0.791, top_p 0.896-1.000, top_k 10-55); the report does not state its ranges.
    """

    temperature: FloatRange = Field(default_factory=lambda: FloatRange(lo=0.6, hi=0.8),
                                    description="Temperature range; lo > 0")
    top_p: FloatRange = Field(default_factory=lambda: FloatRange(lo=0.85, hi=1.0),
                              description="Nucleus mass range, within (0, 1]")
    top_k: IntRange = Field(default_factory=lambda: IntRange(lo=10, hi=60),
                            description="Top-k range (integers >= 1)")

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: FloatRange) -> FloatRange:
        if value.lo <= 0:
            raise ValueError(f"lo must be > 0 (a temperature), got {value.lo:g}")
        return value

    @field_validator("top_p")
    @classmethod
    def _probability(cls, value: FloatRange) -> FloatRange:
        if value.lo <= 0 or value.hi > 1:
            raise ValueError(f"top_p must lie in (0, 1], got [{value.lo:g}, {value.hi:g}]")
        return value


class FixedParams(StrictModel):
    """The baseline condition's parameters, used at every token."""

    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(50, ge=1, le=1_000_000)


class Directions(StrictModel):
    """`up`: the parameter rises with the signal; `down`: it falls."""

    temperature: Direction = "up"
    top_p: Direction = "up"
    top_k: Direction = "down"


class SigmoidMapping(StrictModel):
    """u = 1 / (1 + exp(-gain * s)): s = 0 (a calibration-typical signal) lands mid-range."""

    name: Literal["sigmoid"]
    gain: float = Field(1.0, gt=0, description="Slope: larger values push u towards 0 or 1 sooner")
    directions: Directions = Field(default_factory=Directions)


class LinearClipMapping(StrictModel):
    """u = clip(0.5 + gain * s / 4, 0, 1): the sigmoid's slope at s = 0, without its saturation."""

    name: Literal["linear_clip"]
    gain: float = Field(1.0, gt=0)
    directions: Directions = Field(default_factory=Directions)


class Centres(StrictModel):
    temperature: float = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    top_k: float = Field(ge=1)


class ReconstructedMapping(StrictModel):
    """A "reconstructed" alternative that can meet a report's per-parameter means jointly: u = sigmoid(gain * s)
    as for `sigmoid`, then each parameter is placed piecewise-linearly so that u = 0.5 (a calibration-typical
    signal) gives its `centre` and u = 0 / 1 the ends of its range (direction up: lo at 0, hi at 1; down: the
    reverse). With the centres at a report's neural means and the ranges at its observed min / max, a typical
    token reproduces those means by construction, so they confirm nothing; only the diversity outcomes test
    anything."""

    name: Literal["reconstructed"]
    gain: float = Field(1.0, gt=0)
    directions: Directions = Field(default_factory=Directions)
    centres: Centres = Field(description="Each parameter's value at a typical signal (u = 0.5); inside its range")


SignalMapping = Annotated[Union[SigmoidMapping, LinearClipMapping, ReconstructedMapping], Field(discriminator="name")]


class Calibration(StrictModel):
    texts: list[str] = Field(
        default_factory=list,
        description="Calibration texts; empty = the run's prompts, formatted as for generation "
                    "(chat template included when one is used)")
    max_tokens: int = Field(64, ge=1, le=32_768, description="Each text is cut to its first max_tokens tokens")


class TRESweepSpec(SpecBase):
    """Activation-driven sampling (neural) vs random and fixed parameters; text-diversity metrics.

    Three conditions share prompts and random streams: `neural` (the controller), `random`
    (temperature and top_p uniform in their ranges, top_k uniform on its integers, drawn afresh at
    every token) and `baseline` (fixed parameters). The neural controller, in order:
    1. Calibration: the calibration texts go through the model once; at `layer` and `point`, each
       unit's variance is taken over all token positions that are neither padding nor special
       tokens; the `top_k_neurons` units with the highest variance are kept with their mean and std.
    2. At every generated token, those units are read at the last position of each row and
       standardised, z = (a - mean) / std, then aggregated into one number per row (`aggregate`),
       which is standardised again against its own mean and std over the calibration tokens:
       x_t = 0 is "as typical as the calibration text", 1 is one calibration std above it.
    3. EMA: s_0 = x_0, s_t = ema_alpha * x_t + (1 - ema_alpha) * s_{t-1}.
    4. `mapping` turns s_t into u in [0, 1] (sigmoid: u = 1 / (1 + exp(-gain * s_t))), and each
       parameter is placed in its range: lo + u * (hi - lo) for direction `up`, hi - u * (hi - lo)
       for `down`; top_k is rounded to the nearest integer. With the defaults (gain 1; temperature
       and top_p up, top_k down) a typical token gets temperature 0.70, top_p 0.925, top_k 35, and a
       more atypical one more temperature and nucleus mass over fewer candidates.
    Sampling applies temperature, then top-k, then top-p over the renormalised top-k distribution
    (as transformers' warpers), and draws by inverse CDF from a uniform number that depends only on
    (seed, prompt id, trial, token position), so the three conditions are paired.

    Metrics per generation ("words" = maximal runs of Unicode letters or digits, lowercased,
    with inner apostrophes kept, so "It's" is the one word "it's"; underscores and punctuation split
    words): vocabulary diversity = distinct words / words; bigram diversity = distinct adjacent-word
    pairs / pairs; character entropy = Shannon entropy in bits of the characters of the generated
    text as written (case, spaces and punctuation included); word count. Per prompt and condition,
    cross-trial Jaccard = mean over pairs of trials of |V_i ∩ V_j| / |V_i ∪ V_j| of their word sets.
    A generation with no words (or fewer than two for bigrams) has no value for that metric.
    """

    kind: Literal["tre_sweep"]
    models: ModelList
    layer: Union[StrictInt, StrictFloat] = Field(
        0.5, description="Layer whose activations drive the controller: an integer index (negative counts from "
                         "the end) or a fraction of depth in [0, 1), giving layer floor(fraction * n_layers) "
                         "(0.5 gives 40 of 80, 23 of 46, 28 of 56 layers)")
    point: Literal["mlp_output", "mlp_neurons"] = Field(
        "mlp_output", description="mlp_output: the MLP block's output (hidden size; MoE blocks too); "
                                  "mlp_neurons: the input of the down projection (dense MLPs only)")
    top_k_neurons: int = Field(20, ge=1, le=65_536, description="Highest-variance units kept at calibration")
    aggregate: Literal["mean_abs_z", "mean_z"] = Field(
        "mean_abs_z", description="How the standardised units become one number per row: the mean of |z| "
                                  "(how far from typical) or the mean of z (signed)")
    ema_alpha: float = Field(0.3, gt=0, le=1, description="EMA weight of the newest token (1 = no smoothing)")
    calibration: Calibration = Field(default_factory=Calibration)
    ranges: Ranges = Field(default_factory=Ranges, description="Inclusive ranges of the neural and random "
                                                                "conditions' parameters")
    mapping: SignalMapping = Field(
        default_factory=lambda: SigmoidMapping(name="sigmoid"),
        description="Smoothed signal s -> u in [0, 1], chosen by `name` (sigmoid: 1 / (1 + exp(-gain * s)); "
                    "linear_clip: clip(0.5 + gain * s / 4, 0, 1)); each parameter is then lo + u * (hi - lo) "
                    "(direction up) or hi - u * (hi - lo) (down) within `ranges`, top_k rounded")
    baseline: FixedParams = Field(default_factory=FixedParams, description="The baseline condition's fixed "
                                                                       "temperature, top_p and top_k")
    conditions: list[Condition] = Field(default_factory=lambda: list(CONDITIONS), min_length=1)
    trials: int = Field(5, ge=1, le=10_000, description="Generations per prompt and condition, each with its own seed")
    max_new_tokens: int = Field(128, ge=1, le=32_768)
    categories: list[str] = Field(default_factory=lambda: list(REPORT_CATEGORIES), min_length=1,
                                  description="Every prompt's category must be one of these, and each must occur")
    prompts_per_category: int | None = Field(None, ge=1, description="If set, the file must hold exactly this many "
                                                                      "prompts per category")
    use_per_category: int | None = Field(None, ge=1, description="Run only the first n prompts of each category "
                                                                 "(None = all)")
    prompts_file: str = Field(description="YAML file of prompts ({id, category, text}), relative to the spec file")
    prompts: list[CategorisedPrompt] = Field(
        default_factory=list, description="Filled in from prompts_file when the spec is loaded (so run.json records "
                                          "them); not written in spec files")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="chat: the tokenizer's chat template with the prompt as the user turn; plain: the text "
                            "with the tokenizer's special tokens; auto: chat for instruct models that have a template")
    nan_policy: Literal["error", "mask"] = Field(
        "error", description="error: stop at the first NaN/Inf in the activations, logits or probabilities, naming "
                             "model, layer or point, and dtype; mask: drop non-finite logits (-inf) and units from "
                             "the signal, end a row that has no finite logit, and count the affected tokens")
    dtype: DType | None = Field(None, description="Override the catalog dtype of every model")
    quantization: Literal["none", "int8", "nf4"] | None = Field(
        None, description="Override the catalog quantization of every model (bitsandbytes, CUDA or CPU): int8 = "
                          "LLM.int8() (matmul inputs in float16), nf4 = 4-bit NormalFloat computing in `dtype`")
    batch_size: int | None = Field(None, ge=1, le=4096, description="Rows per forward pass (None = all prompts of a trial)")

    @field_validator("layer")
    @classmethod
    def _layer(cls, value):
        if isinstance(value, float) and not 0 <= value < 1:
            raise ValueError(f"a fraction of depth must lie in [0, 1), got {value:g} (write an integer for a layer index)")
        return value

    @field_validator("conditions", "categories")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"repeated: {', '.join(repeated)}")
        return values

    @field_validator("categories")
    @classmethod
    def _category_names(cls, values: list[str]) -> list[str]:
        import re

        for value in values:
            if not re.fullmatch(NAME_PATTERN, value):
                raise ValueError(f"category {value!r} must be lowercase letters, digits and underscores")
        return values

    @field_validator("prompts_file")
    @classmethod
    def _prompts_file_is_valid(cls, value: str, info: ValidationInfo) -> str:
        spec_dir = (info.context or {}).get("spec_dir")
        if spec_dir is None:  # a recorded spec (run.json) carries its prompts
            return value
        prompts = read_prompt_file(prompt_file_path(spec_dir, value))
        if "categories" in info.data:
            check_categories(prompts, info.data["categories"], info.data.get("prompts_per_category"), value)
        return value

    @model_validator(mode="after")
    def _fill_prompts(self, info: ValidationInfo):
        spec_dir = (info.context or {}).get("spec_dir")
        if spec_dir is not None:
            if self.prompts:
                raise ValueError("prompts: filled in from prompts_file; do not write it in a spec")
            self.prompts = read_prompt_file(prompt_file_path(spec_dir, self.prompts_file))
        elif not self.prompts:
            raise ValueError("prompts: missing (a spec read from a file fills them in from prompts_file)")
        else:
            check_categories(self.prompts, self.categories, self.prompts_per_category, "prompts")
        if self.use_per_category is not None and self.prompts_per_category is not None \
                and self.use_per_category > self.prompts_per_category:
            raise ValueError(f"use_per_category ({self.use_per_category}) exceeds prompts_per_category "
                             f"({self.prompts_per_category})")
        return self

    @model_validator(mode="after")
    def _centres_inside_ranges(self):
        if isinstance(self.mapping, ReconstructedMapping):
            for param in SAMPLING_PARAMS:
                centre, bounds = getattr(self.mapping.centres, param), getattr(self.ranges, param)
                if not bounds.lo <= centre <= bounds.hi:
                    raise ValueError(f"mapping.centres.{param}: {centre:g} lies outside ranges.{param} "
                                     f"[{bounds.lo:g}, {bounds.hi:g}]")
        return self

    def input_files(self) -> list[str]:
        return [self.prompts_file]

    def selected_prompts(self) -> list[CategorisedPrompt]:
        """The prompts this run generates from: all, or the first `use_per_category` of each category."""
        if self.use_per_category is None:
            return list(self.prompts)
        taken: Counter = Counter()
        chosen = []
        for prompt in self.prompts:
            if taken[prompt.category] < self.use_per_category:
                chosen.append(prompt)
                taken[prompt.category] += 1
        return chosen

    def layer_for(self, n_layers: int) -> int:
        """The layer index for a model with `n_layers` blocks (negative indices are left to the model)."""
        if isinstance(self.layer, float):
            return min(n_layers - 1, math.floor(self.layer * n_layers))
        return self.layer

    def model_names(self) -> list[str]:
        return list(self.models)


SPEC_MODEL = TRESweepSpec
