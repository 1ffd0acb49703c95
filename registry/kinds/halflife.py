"""Routing-pressure half-life of a mixture-of-experts model over generated chunks (seed 004).

The report describes a protocol, not a finished measurement, and never defines "pressure"; the
definitions below are this project's, declared per spec and stated on every page.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from registry.catalog import model_entry
from registry.common import DatasetName, DType, ModelName, SpecBase, StrictModel

PressureName = Literal["entropy_complement", "top1_usage"]


class TextPrompt(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Short identifier used in records and tables")
    text: str = Field(min_length=1)


class RandomPrompt(StrictModel):
    """The report's toy prompt: `tokens` token ids drawn uniformly from the vocabulary (seeded by the trajectory's seed)."""

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    random_tokens: int = Field(ge=1, le=4096)


class Sampling(StrictModel):
    """How each token is chosen. The report does not say; greedy is the default so a trajectory is a
    property of the model and prompt alone, and `sample: true` draws with a seeded generator."""

    sample: bool = False
    temperature: float = Field(0.7, gt=0, le=10)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(50, ge=1, le=1_000_000)


class Pressure(StrictModel):
    """Routing pressure per generated token, averaged over `layers` (of the MoE layers, 0-based):
    - entropy_complement: 1 - H(p) / ln(E), with p = softmax(router logits) over the E experts: 1 when one
      expert takes everything, 0 when routing is uniform (the default: it uses the whole distribution);
    - top1_usage: the largest routing probability max(p), between 1/E and 1.
    `layers: middle_third` takes the middle third of the MoE layers (the report's "mid"-pressure); a list
    names layers explicitly. Per chunk, the pressure is the mean over the chunk's tokens (`chunk_mean`) or
    the chunk's last token (`last_token`); both are recorded, `aggregate` picks the one the statistics use."""

    name: PressureName = "entropy_complement"
    layers: Union[Literal["middle_third", "all"], list[int]] = "middle_third"
    aggregate: Literal["chunk_mean", "last_token"] = "chunk_mean"

    @field_validator("layers")
    @classmethod
    def _layers(cls, value):
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("a list of layers must be non-empty and without repeats")
        return value


class Perturbation(StrictModel):
    """The perturbation arm: `text` is appended after every chunk before the next is generated; the
    baseline arm is identical (same prompts, seeds and sampling) without it."""

    enabled: bool = True
    text: str = Field(" Please continue:", min_length=1)


class Pretrain(StrictModel):
    """Train the model's weights (router included) on text before measuring: the CPU stand-in for
    learned routing, since no trained MoE checkpoint is reachable offline. Causal LM loss plus the
    model's own router load-balancing loss; AdamW; cached like other trained state."""

    dataset: DatasetName
    split: str = "train"
    text_field: Literal["text", "question"] = "text"
    steps: int = Field(ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=8192)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    seeds: list[int] = Field(default_factory=list, max_length=100, description=(
        "Training seeds (batch order): one trained model per seed, each measured from every prompt and seed; "
        "empty = the spec's `seed` only"))

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"pretrain.seeds must be distinct non-negative integers, got {seeds}")
        return seeds


class Analysis(StrictModel):
    """Thresholds the statistics use (stated on the page)."""

    cliff_drop: float = Field(0.1, gt=0, le=1, description="A cliff is a chunk-to-chunk drop of at least this "
                                                           "fraction of the first chunk's pressure ...")
    cliff_z: float = Field(3.5, ge=0, le=100, description="... that also stands out from the trajectory's own "
                                                         "chunk-to-chunk changes: above their median by cliff_z "
                                                         "robust standard deviations (1.4826 x MAD); 0 turns this off")
    converge_tolerance: float = Field(0.02, gt=0, le=1, description="Entropy has converged from the first chunk "
                                                                    "after which it stays within this distance of "
                                                                    "its mean over the last third of the chunks")


class HalfLifeSpec(SpecBase):
    """Generate `chunks` chunks of `chunk_tokens` tokens from each prompt, each chunk continuing the token
    sequence so far (no decode and re-encode, so no retokenisation), for every seed and both arms. At
    every generated token the router logits of every MoE layer are read at the last position (transformers
    returns them per layer as (batch x sequence, experts); the row of the last position is taken) and
    recorded per layer as expert usage p = softmax(logits), normalised entropy H / ln(E) and the top-1
    minus top-2 margin. Pressure is computed from the records by the analysis, so changing its
    definition needs no model run.

    Half-life: the first chunk whose pressure is at most half the first chunk's ("not reached" is a
    result). Exponential fit P = P_inf + (P0 - P_inf) exp(-t / tau), half-life tau ln 2, with a CI from the
    fit's covariance (no fit when the fitted curve does not decay or its half-life lies beyond ten times
    the chunks generated). Linear slope per chunk with a CI. Cliffs: chunk-to-chunk drops of at least
    `analysis.cliff_drop` x P0 that are also outliers among the trajectory's changes (`analysis.cliff_z`). Entropy collapse (H_first - H_last) / H_first; early (first third) vs late
    (last third) means; chunks to converge. Pressure-entropy correlation. Perturbation: per-chunk delta
    (perturbed - baseline) with a paired t-test over trajectories, and its sum (the "external energy")."""

    kind: Literal["halflife"]
    model: ModelName
    prompts: list[Union[TextPrompt, RandomPrompt]] = Field(min_length=1, max_length=1000)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1, max_length=1000,
                             description="One trajectory per prompt and seed (sampling and random prompts)")
    chunks: int = Field(50, ge=1, le=10_000)
    chunk_tokens: int = Field(20, ge=1, le=4096)
    sampling: Sampling = Field(default_factory=Sampling)
    pressure: Pressure = Field(default_factory=Pressure)
    perturbation: Perturbation = Field(default_factory=Perturbation)
    pretrain: Pretrain | None = None
    analysis: Analysis = Field(default_factory=Analysis)
    add_bos: bool = Field(True, description="Start text prompts with the tokenizer's BOS")
    dtype: DType | None = Field(None, description="Override the catalog dtype")
    quantization: Literal["none", "int8", "nf4"] | None = Field(None, description="Override the catalog quantization "
                                                                                  "(bitsandbytes)")

    @field_validator("prompts")
    @classmethod
    def _unique_ids(cls, prompts):
        ids = [p.id for p in prompts]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"prompt ids must be unique; repeated: {', '.join(repeated)}")
        return prompts

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat")
        return seeds

    @model_validator(mode="after")
    def _fits_the_model(self, info: ValidationInfo):
        """Named pressure layers must exist (MoE layers of a Mixtral-style model are its decoder layers)."""
        profile = (info.context or {}).get("profile")
        if profile is None or not isinstance(self.pressure.layers, list):
            return self
        entry = model_entry(self.model)
        if profile in entry.sources:
            n_layers = entry.sources[profile].dims()[0]
            bad = [layer for layer in self.pressure.layers if not 0 <= layer < n_layers]
            if bad:
                raise ValueError(f"pressure.layers: {bad} not among the model's layers 0..{n_layers - 1} "
                                 f"({self.model} under the {profile} profile)")
        return self

    def model_names(self) -> list[str]:
        return [self.model]

    def data_needs(self) -> list[tuple[str, str]]:
        return [(self.pretrain.dataset, self.pretrain.split)] if self.pretrain else []

    def arms(self) -> list[str]:
        return ["baseline", "perturbed"] if self.perturbation.enabled else ["baseline"]


SPEC_MODEL = HalfLifeSpec
