"""Cross-model injection by layer, orthogonal Procrustes and learned adapters (seed 003).

Layer indexing (the report's 0..32 on 32-layer models): layer L is the residual stream entering block
L, so 0 is the embedding output (after any model-specific scaling) and n_layers is the last block's
output before the final norm. Layers are given as depth fractions f and resolved per model as
floor(f x n_layers + 0.5), so one spec describes the paper pair (32 and 32 layers) and the local pair
(30 and 18 layers) alike.

Injection: the source model runs on the prompt and its layer-L states (every position, the source's
tokenization) are mapped to the target's width; the target runs on as many positions with zero input
embeddings, its block L receives the mapped states in place of its own stream, and it then generates
greedily with that prefix in its cache. Below block L the target's cache for the prefix positions comes
from the zero inputs (the report does not say what its code did there; this is the choice, and the page
says it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from registry.catalog import model_entry
from registry.common import DatasetName, DType, ModelName, SpecBase, StrictModel

REPORT_PROMPTS = ["The capital of France is", "To solve this problem, we need to", "The future of artificial intelligence",
                  "In the year 2050, humanity will", "The main difference between cats and dogs"]

MapName = Literal["none", "procrustes", "linear", "affine", "low_rank"]
QUALITY_LEVELS = ["fluent", "partial sentences", "some coherent phrases", "fragments", "garbage", "token loop"]


def resolve_layer(fraction: float, n_layers: int) -> int:
    """A depth fraction as a layer index of a model with `n_layers` blocks (0 = embeddings, n = last block)."""
    return int(fraction * n_layers + 0.5)


class Calibration(StrictModel):
    """Paired states for fitting Procrustes and adapters and for the held-out alignment metrics.

    The report never says how tokens of two tokenizers are paired:
    - mean_pooled: one pair per text, each model's states averaged over the text's tokens (needs at least
      as many texts as the wider model's width for a full-rank fit);
    - span_end: one pair per character offset at which a token of each tokenizer ends (the same text
      prefix has been read by both at that point); BOS is not paired."""

    dataset: DatasetName = "ag_news"
    split: str = "test"
    text_field: Literal["text", "question"] = "text"
    texts: int = Field(400, ge=4, le=1_000_000, description="Texts drawn (seeded) from the split")
    max_chars: int = Field(400, ge=8, le=100_000, description="Each text is cut to this many characters")
    pairing: Literal["mean_pooled", "span_end"] = "span_end"
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="Texts held out: the alignment metrics are "
                                                                 "measured on them, never fitted on")
    pairs_per_text: int | None = Field(None, ge=1, le=100_000, description="Keep at most this many token pairs per "
                                                                          "text (a seeded choice); none keeps all")
    rank_deficient: Literal["refuse", "allow"] = Field(
        "refuse", description="When fewer fitting pairs than the wider width: refuse, or fit a rank-deficient map")


class InfoNCE(StrictModel):
    """Contrastive term between mean-pooled adapted source states and mean-pooled target states of the same
    text, against the other texts of the batch. Its chance level is ln(batch); records keep loss - ln(batch)."""

    weight: float = Field(0.1, ge=0, le=100)
    temperature: float = Field(0.07, gt=0, le=10)


class EarlyStopping(StrictModel):
    """Stop when the validation loss has not improved by min_delta for `patience` epochs (the report's class)."""

    patience: int = Field(2, ge=1, le=1000)
    min_delta: float = Field(0.001, ge=0)


class Adapter(StrictModel):
    """A learned map from source to target states at each of `layers`, trained with the target's LM loss on
    its own tokenization of each text's continuation, after the injected source states of the text's first
    `context_fraction` of characters (where the adapted states enter the target: its block at that layer),
    plus the InfoNCE term. The low-rank map is a frozen base map (the Procrustes fit) plus B A x."""

    type: Literal["linear", "affine", "low_rank"]
    rank: int = Field(32, ge=1, le=65536, description="low_rank only: rank of B A")
    init: Literal["procrustes", "random"] = Field("procrustes", description="linear/affine start (and low_rank's "
                                                                            "frozen base)")
    layers: list[float] = Field(default_factory=lambda: [0.5], min_length=1, max_length=64,
                                description="Depth fractions aligned together (one adapter each)")
    layer_weights: list[float] | None = Field(None, description="Per-layer loss weights (default equal)")
    context_fraction: float = Field(0.5, gt=0, lt=1)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(20, ge=1, le=4096)
    grad_accumulation: int = Field(1, ge=1, le=4096)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    infonce: InfoNCE = Field(default_factory=InfoNCE)
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    cka_every: int = Field(0, ge=0, le=1_000_000, description="Held-out CKA every N optimizer steps (0: per epoch only)")

    @model_validator(mode="after")
    def _weights_match_layers(self):
        if self.layer_weights is not None and len(self.layer_weights) != len(self.layers):
            raise ValueError(f"layer_weights has {len(self.layer_weights)} entries for {len(self.layers)} layers")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("adapter.layers must not repeat")
        return self


class Quality(StrictModel):
    """How a generation is placed on the report's qualitative scale, from automatic scores (this project's
    scale, stated on the page). Two readings, and the level is the worse of them, so a repetitive output is
    never fluent however low its perplexity:
    - perplexity: r = its perplexity under the target reading the prompt natively / the geometric mean of the
      same for the target's own greedy continuations: r <= thresholds[0] fluent, <= [1] partial sentences,
      <= [2] some coherent phrases, <= [3] fragments, else garbage;
    - repetition (the share of its tokens that repeat an earlier token bigram): at least `loop_repetition` is
      a token loop; otherwise above repetition_thresholds[0] it is at best partial sentences, above [1] at
      best some coherent phrases, above [2] at best fragments."""

    loop_repetition: float = Field(0.5, gt=0, le=1)
    thresholds: list[float] = Field(default_factory=lambda: [2.0, 8.0, 32.0, 128.0], min_length=4, max_length=4)
    repetition_thresholds: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.35], min_length=3, max_length=3)

    @field_validator("repetition_thresholds")
    @classmethod
    def _rising_repetition(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])) or value[0] < 0:
            raise ValueError("repetition_thresholds must increase from a non-negative start")
        return value

    @model_validator(mode="after")
    def _below_the_loop(self):
        if self.repetition_thresholds[-1] >= self.loop_repetition:
            raise ValueError("repetition_thresholds must stay below loop_repetition")
        return self

    @field_validator("thresholds")
    @classmethod
    def _increasing(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])) or value[0] <= 1:
            raise ValueError("thresholds must increase and start above 1")
        return value


class AlignmentSpec(SpecBase):
    """Same-model baselines, zero-shot injection by layer in both directions (no map, Procrustes), and
    optionally learned adapters with per-epoch evaluation and early stopping. See the module docstring for
    the layer indexing and the injection procedure."""

    kind: Literal["alignment"]
    source_model: ModelName
    target_model: ModelName
    both_directions: bool = Field(True, description="Also inject target -> source")
    prompts: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: list(REPORT_PROMPTS), min_length=1,
                                                               max_length=1000)
    max_new_tokens: int = Field(20, ge=1, le=4096)
    layers: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=1, max_length=256,
                                description="Depth fractions to inject at")
    maps: list[Literal["none", "procrustes"]] = Field(default_factory=lambda: ["none", "procrustes"], min_length=1)
    unaligned_map: Literal["pad_truncate", "random_semi_orthogonal"] | None = Field(
        None, description="What 'no map' means when the widths differ: copy the shared leading dimensions (zero-pad "
                          "or truncate the rest), or a seeded random semi-orthogonal map; required then")
    calibration: Calibration = Field(default_factory=Calibration)
    adapters: list[Adapter] = Field(default_factory=list, max_length=16)
    quality: Quality = Field(default_factory=Quality)
    add_bos: bool = Field(True, description="Start prompts and texts with each tokenizer's BOS where it uses one")
    dtype: DType | None = Field(None, description="Override the catalog dtype of both models")
    training_seeds: list[int] = Field(default_factory=list, description=(
        "Seeds the adapters are trained with (initialisation and batch order), each trained and evaluated once; "
        "empty = the spec's `seed` only. The calibration split, maps and injections use `seed` and run once."))

    @field_validator("training_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"training_seeds must be distinct non-negative integers, got {seeds}")
        return seeds

    def adapter_seeds(self) -> list[int]:
        return list(self.training_seeds) or [self.seed]

    @field_validator("layers")
    @classmethod
    def _fractions(cls, value):
        if any(not 0 <= f <= 1 for f in value) or len(set(value)) != len(value):
            raise ValueError("layers are depth fractions in [0, 1], without repeats")
        return value

    @model_validator(mode="after")
    def _unaligned_map_declared(self, info: ValidationInfo):
        """`maps: [none]` between models of different widths needs `unaligned_map` (known once the profile is)."""
        profile = (info.context or {}).get("profile")
        if profile is None or "none" not in self.maps or self.unaligned_map is not None:
            return self
        widths = {}
        for name in (self.source_model, self.target_model):
            source = model_entry(name).sources.get(profile)
            if source is None:
                return self
            widths[name] = source.dims()[1]
        if len(set(widths.values())) > 1:
            raise ValueError(f"unaligned_map: the widths differ ({', '.join(f'{k} {v}' for k, v in widths.items())}), "
                             "so 'none' needs a declared map: pad_truncate or random_semi_orthogonal")
        return self

    @model_validator(mode="after")
    def _layers_resolve_apart(self, info: ValidationInfo):
        """Depth fractions that land on the same layer of either model would repeat a row or share an adapter."""
        profile = (info.context or {}).get("profile")
        if profile is None:
            return self
        for name in (self.source_model, self.target_model):
            source = model_entry(name).sources.get(profile)
            if source is None:
                continue
            n_layers = source.dims()[0]
            for field, fractions in [("layers", self.layers)] + [(f"adapters.{i}.layers", a.layers)
                                                                  for i, a in enumerate(self.adapters)]:
                resolved = [resolve_layer(f, n_layers) for f in fractions]
                if len(set(resolved)) != len(resolved):
                    raise ValueError(f"{field}: {fractions} land on layers {resolved} of {name} ({n_layers} layers "
                                     f"under the {profile} profile); use fractions that resolve to different layers")
        return self

    @model_validator(mode="after")
    def _distinct_models(self):
        if self.source_model == self.target_model:
            raise ValueError("source_model and target_model must differ (the same-model baseline runs anyway)")
        for i, adapter in enumerate(self.adapters):
            if any(not 0 <= f <= 1 for f in adapter.layers):
                raise ValueError(f"adapters.{i}.layers are depth fractions in [0, 1]")
        return self

    def model_names(self) -> list[str]:
        return [self.source_model, self.target_model]

    def data_needs(self) -> list[tuple[str, str]]:
        return [(self.calibration.dataset, self.calibration.split)]

    def directions(self) -> list[tuple[str, str]]:
        pairs = [(self.source_model, self.target_model)]
        return pairs + [(self.target_model, self.source_model)] if self.both_directions else pairs


SPEC_MODEL = AlignmentSpec
