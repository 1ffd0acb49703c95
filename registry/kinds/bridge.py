"""Latent bridge (seed 002): a sender LLM's hidden states become soft tokens for a receiver LLM.

Pipeline: sender hidden states of `bridge.sender_layer` -> StatisticalNormalizer (whitening,
calibrated on `normalizer.calibration_items` items, optionally learnable) -> PerceiverResampler
(`soft_tokens` learned queries; cross-attention to the sender sequence, self-attention, FFN)
-> output scaling (RMS-normalise or tanh, times a learnable scale initialised to the receiver's
embedding RMS) -> optional VQ -> the receiver reads [BOS] primer <soft tokens> prompt and must
produce the answer. Both LLMs are frozen. Every baseline is evaluated on the same items.
"""

from __future__ import annotations

import string
from typing import Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from registry.catalog import dataset_entry, model_entry
from registry.common import DatasetName, ModelName, SpecBase, StrictModel

Method = Literal["bridge", "sender_text", "receiver_text", "sender_few_shot", "receiver_few_shot",
                 "text_relay", "noise", "prompt_tuning", "random"]
ALL_METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]
# Methods whose result depends on a training seed (noise is drawn at the trained bridge's output scale).
SEEDED_METHODS: tuple[str, ...] = ("bridge", "noise", "prompt_tuning")
PASSKEY = "passkey"
CONTINUATION_SET = "continuation"  # the `set` of records.jsonl rows holding zero-shot continuation scores
ITEM_FIELDS = {"classification": {"text"}, "multiple_choice": {"question", "choices"},
               "generation": {"question"}, PASSKEY: {"text"}}


def template_fields(template: str) -> set[str]:
    """Top-level field names a str.format template uses ('{choices[0]}' -> 'choices')."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field.split("[")[0].split(".")[0])
    return names


class ContinuationSpec(StrictModel):
    """Zero-shot scoring of each choice as a continuation, as lm-evaluation-harness scores multiple choice.

    The score of a choice is the summed log-likelihood of its tokens after the context; `acc` takes the
    highest sum, `acc_norm` the highest sum divided by the choice's length in characters (lm-eval's rule).
    """

    context_template: str = Field(description="The context before every choice, from the item's fields "
                                              "(PIQA in lm-eval: 'Question: {question}\\nAnswer:')")
    target_delimiter: str = Field(" ", description="Between the context and each choice (lm-eval's default)")
    items: int | None = Field(None, ge=1, le=100_000, description="Items of eval_split scored, from its start "
                                                                 "(default: the whole split)")
    batch_size: int = Field(32, ge=1, le=4096, description="Context + choice sequences per forward pass")


class TaskSpec(StrictModel):
    """The data and how each party reads it. Templates are str.format strings."""

    dataset: Union[DatasetName, Literal["passkey"]] = Field(
        description="Catalog dataset, or 'passkey' (synthetic 5-digit codes the project generates)")
    train_split: str = "train"
    eval_split: str = "test"
    train_items: int | None = Field(None, ge=1, le=1_000_000, description="Training pool size (default: steps x batch, capped by the split)")
    eval_items: int = Field(200, ge=1, le=100_000, description="Evaluation items (a seeded sample; the same items for every method)")
    label_column: str | None = Field(None, description="Label column; must be the catalog's label column for the dataset")
    input_template: str = Field("{text}", description="Builds the task input from an item's fields (text, question, choices, ...)")
    sender_template: str = Field("{input}", description="What the sender reads; its hidden states feed the bridge")
    primer: str = Field("Message:", description="Receiver text before the soft tokens (encoded once, no gradient)")
    prompt: str = Field("\nAnswer:", description="Receiver text after the soft tokens, before the answer")
    instruction: str = Field("", description="Start of every text-baseline prompt")
    list_labels: bool = Field(True, description="Name the labels in text-baseline instructions")
    item_template: str = Field("Input: {input}\nAnswer:", description="Per-item part of text-baseline prompts")
    answer_prefix: str = Field(" ", description="Text between the prompt and the verbalizer")
    answer_suffix: str = Field("\n", description="Terminator after the verbalizer (trained, scored and ends generation)")
    verbalizers: dict[str, str] = Field(default_factory=dict,
                                        description="Label name -> answer text; default: the name, lower-cased, '_' -> ' '")
    max_new_tokens: int = Field(16, ge=1, le=4096)
    relay_template: str = Field("Summarize the following text in one sentence.\nText: {input}\nSummary:",
                                description="Text relay: the sender writes from this prompt, the receiver classifies what it wrote")
    relay_max_tokens: int = Field(48, ge=1, le=4096)
    passkey_digits: int = Field(5, ge=1, le=12)
    continuation: ContinuationSpec | None = Field(
        None, description="Also score both models zero-shot by choice log-likelihood (lm-eval protocol) on eval_split; "
                          "choices are the item's choices (multiple choice) or the verbalizers (classification)")

    @property
    def task_type(self) -> str:
        if self.dataset == PASSKEY:
            return PASSKEY
        return dataset_entry(self.dataset).task

    @model_validator(mode="after")
    def _templates_and_labels(self):
        fields = ITEM_FIELDS[self.task_type]
        unknown = template_fields(self.input_template) - fields
        if unknown:
            raise ValueError(f"input_template uses {sorted(unknown)}, but {self.dataset} items have {sorted(fields)}")
        for name in ("sender_template", "item_template", "relay_template"):
            extra = template_fields(getattr(self, name)) - {"input"}
            if extra:
                raise ValueError(f"{name} may only use {{input}}, not {sorted(extra)}")
        if self.continuation is not None:
            if self.task_type not in ("multiple_choice", "classification"):
                raise ValueError(f"continuation scoring needs choices: {self.dataset} is a {self.task_type} task")
            unknown = template_fields(self.continuation.context_template) - fields
            if unknown:
                raise ValueError(f"continuation.context_template uses {sorted(unknown)}, but {self.dataset} items have "
                                 f"{sorted(fields)}")
        if self.task_type == "multiple_choice" and not self.verbalizers:
            raise ValueError("a multiple-choice task needs verbalizers: one per choice, in order (e.g. {'1': '1', '2': '2'})")
        if self.dataset == PASSKEY:
            if self.verbalizers or self.label_column:
                raise ValueError("passkey has no labels: remove verbalizers/label_column")
            return self
        entry = dataset_entry(self.dataset)
        default_column = entry.columns.get("label")
        if self.label_column is not None and self.label_column != default_column:
            raise ValueError(f"unknown label column {self.label_column!r} for {self.dataset} (known: {default_column})")
        labels = self.label_names()
        missing = [k for k in self.verbalizers if k not in labels]
        if missing:
            raise ValueError(f"verbalizers name {missing[0]!r}, which is not in the label list of {self.dataset}")
        for split in {self.train_split, self.eval_split}:
            if split not in entry.splits:
                raise ValueError(f"{self.dataset} has no split {split!r} (it has: {', '.join(entry.splits)})")
        return self

    def label_names(self) -> list[str]:
        if self.task_type in (PASSKEY, "generation"):
            return []
        entry = dataset_entry(self.dataset)
        if entry.task == "multiple_choice":
            return list(self.verbalizers) if self.verbalizers else []
        return list(entry.label_names)

    def verbalizer(self, label: str) -> str:
        return self.verbalizers.get(label, label.replace("_", " ").replace("?", "").lower())


class NormalizerSpec(StrictModel):
    calibration_items: int = Field(500, ge=1, le=100_000, description="Items whose sender states give the whitening statistics")
    learnable: bool = Field(True, description="Train the whitening mean and scale with the bridge")


class ResamplerSpec(StrictModel):
    dim: int = Field(512, ge=8, le=16_384, description="Width of the Perceiver latents")
    depth: int = Field(4, ge=1, le=64)
    heads: int = Field(8, ge=1, le=128)
    ffn_mult: int = Field(4, ge=1, le=16)

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self


class OutputSpec(StrictModel):
    scaling: Literal["rms", "tanh", "none"] = Field(
        "rms", description="rms: x / rms(x) * scale; tanh: tanh(x) * scale; none: x as the resampler gives it")
    scale_init: Union[Literal["receiver_rms"], float] = Field(
        "receiver_rms", description="Initial scale: the receiver's token-embedding RMS, or a number")
    learnable_scale: bool = True


class VQSpec(StrictModel):
    """Vector quantisation of the soft tokens (straight-through), as in the SST-2 signal check."""

    codebook_size: int = Field(4096, ge=2, le=1_048_576)
    commitment: float = Field(0.25, ge=0)
    weight: float = Field(1.0, ge=0, description="Weight of the VQ loss in the total")


class BridgeArchSpec(StrictModel):
    sender_layer: int = Field(-1, description="Sender block whose output is read (negative counts from the end)")
    soft_tokens: int = Field(ge=1, le=4096, description="K, soft tokens per recurrent step")
    recurrent_steps: int = Field(1, ge=1, le=64, description="Latent chain-of-thought steps, each adding K soft tokens (phase 19)")
    normalizer: NormalizerSpec = Field(default_factory=NormalizerSpec)
    resampler: ResamplerSpec = Field(default_factory=ResamplerSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    vq: VQSpec | None = None
    sender_hidden_size: int | None = Field(None, ge=1, description="If set, must equal the sender's width under the profile")
    receiver_hidden_size: int | None = Field(None, ge=1, description="If set, must equal the receiver's width under the profile")


class TrainingSpec(StrictModel):
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    diversity_weight: float = Field(0.1, ge=0, description="Weight of the batch diversity loss (mean off-diagonal cosine)")
    quick_eval_every: int = Field(100, ge=1, description="Steps between quick evaluations (scored accuracy)")
    quick_eval_items: int = Field(32, ge=1, le=100_000)
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints (an interrupted run resumes)")
    seeds: list[int] = Field(default_factory=list, description=(
        "Training seeds of the seeded methods (bridge, noise soft tokens, prompt tuning), each trained and "
        "evaluated once per seed on the same items; empty = the spec's `seed` only. The items, the text "
        "baselines and chance use `seed` and run once."))

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"training.seeds must be distinct non-negative integers, got {seeds}")
        return seeds


class PromptTuningSpec(StrictModel):
    steps: int = Field(200, ge=1, le=10_000_000)
    lr: float = Field(3e-3, gt=0)
    soft_tokens: int | None = Field(None, ge=1, le=4096, description="Default: the bridge's soft-token count")


class EvaluationSpec(StrictModel):
    methods: list[Method] = Field(default_factory=lambda: list(ALL_METHODS))
    few_shot: int = Field(5, ge=1, le=64, description="Demonstrations in the few-shot baselines (fixed, seeded, from the train pool)")
    prompt_tuning: PromptTuningSpec = Field(default_factory=PromptTuningSpec)
    batch_size: int = Field(16, ge=1, le=4096)

    @field_validator("methods")
    @classmethod
    def _bridge_first(cls, methods: list[str]) -> list[str]:
        if "bridge" not in methods:
            raise ValueError("methods must include 'bridge' (every comparison is against it)")
        if len(set(methods)) != len(methods):
            raise ValueError("methods must not repeat")
        return methods


class BridgeSpec(SpecBase):
    kind: Literal["bridge"]
    sender: ModelName
    receiver: ModelName
    task: TaskSpec
    bridge: BridgeArchSpec
    training: TrainingSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @model_validator(mode="after")
    def _fits_the_models(self, info: ValidationInfo):
        profile = (info.context or {}).get("profile")
        if profile is None:
            return self
        sender, receiver = model_entry(self.sender), model_entry(self.receiver)
        if profile not in sender.sources or profile not in receiver.sources:
            return self  # not runnable under this profile; `harness run` says so
        n_layers, sender_width = sender.sources[profile].dims()
        if not -n_layers <= self.bridge.sender_layer < n_layers:
            raise ValueError(f"bridge.sender_layer {self.bridge.sender_layer} is out of range for {self.sender} "
                             f"({n_layers} layers under the {profile} profile; valid: {-n_layers}..{n_layers - 1})")
        receiver_width = receiver.sources[profile].dims()[1]
        for role, declared, actual, name in (("sender", self.bridge.sender_hidden_size, sender_width, self.sender),
                                             ("receiver", self.bridge.receiver_hidden_size, receiver_width, self.receiver)):
            if declared is not None and declared != actual:
                raise ValueError(f"bridge.{role}_hidden_size is {declared}, but {name} has hidden size {actual} "
                                 f"under the {profile} profile")
        return self

    def training_seeds(self) -> list[int]:
        """The seeds the seeded methods run with; the first one's rows also hold the deterministic methods."""
        return list(self.training.seeds) or [self.seed]

    def model_names(self) -> list[str]:
        return [self.sender, self.receiver]

    def data_needs(self) -> list[tuple[str, str]]:
        if self.task.dataset == PASSKEY:
            return []
        return sorted({(self.task.dataset, self.task.train_split), (self.task.dataset, self.task.eval_split)})


SPEC_MODEL = BridgeSpec
