"""Latent bridge (seed 002): a sender LLM's hidden states become soft tokens for a receiver LLM.

Pipeline: sender hidden states of `bridge.sender_layer` -> StatisticalNormalizer (whitening,
calibrated on `normalizer.calibration_items` items, optionally learnable, optionally re-coloured to
the receiver's embedding statistics) -> PerceiverResampler (`soft_tokens` learned queries;
cross-attention to the sender sequence, self-attention, FFN) -> optional VQ or FSQ -> output head
(RMS-normalise, tanh, LayerNorm + tanh, or none, times a learnable scale initialised to the
receiver's embedding RMS) -> the receiver reads [BOS] primer <soft tokens> prompt and must produce
the target. Both LLMs are frozen. Every baseline is evaluated on the same items.

The GSM8K lineage of seed 002 (phases 1-15) adds auxiliary losses (`training.losses`), per-token
loss weights, other targets (`task.target_template`), separate training and evaluation primers and
the placement of the soft tokens; phases 12-14 replace the resampler by a rectified-flow DiT
(`bridge.flow`). Every such field defaults to the behaviour without it.
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


def require_heads_divide(width: int, heads: int, width_field: str, heads_field: str) -> None:
    """Multi-head attention splits the width evenly across heads."""
    if width % heads:
        raise ValueError(f"{width_field} ({width}) must be divisible by {heads_field} ({heads})")


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
    dev_items: int = Field(64, ge=1, le=100_000, description=(
        "Development items carved from the training pool after the training items (never trained on, never "
        "evaluated): quick evaluation during training and selection runs read these, never the evaluation items"))
    label_column: str | None = Field(None, description="Label column; must be the catalog's label column for the dataset")
    input_template: str = Field("{text}", description="Builds the task input from an item's fields (text, question, choices, ...)")
    sender_template: str = Field("{input}", description="What the sender reads; its hidden states feed the bridge")
    primer: str = Field("Message:", description="Receiver text before the soft tokens (encoded once, no gradient)")
    train_primer: str | None = Field(None, description=(
        "Primer used in training only (default: `primer`). Setting it reproduces seed 002's phase-3 train/eval primer "
        "mismatch (section 18); leave it unset so both use one primer."))
    placement: Literal["after_primer", "before_bos"] = Field("after_primer", description=(
        "after_primer: [BOS] primer <soft tokens> prompt; before_bos: <soft tokens> [BOS] prompt, with no primer "
        "(seed 002's auto-encoder, phase 10). A receiver without BOS (SmolLM2) reads <soft tokens> prompt."))
    target_template: str = Field("{answer}", description=(
        "What the receiver is trained to write after the prompt (between answer_prefix and answer_suffix), from "
        "{answer} (the gold label, code or final number), {solution} (GSM8K's worked solution ending in '#### n') "
        "and {input}; e.g. '{input}\\nAnswer: {solution}' is the phase-10 auto-encoder target"))
    target_max_tokens: int | None = Field(None, ge=1, le=100_000, description=(
        "Train on at most this many target tokens per item (the rest is cut); none: the whole target"))
    number_from: Literal["first_line", "final"] = Field("first_line", description=(
        "Which number of a generation is the prediction (generation tasks): the first on its first line, or the "
        "final answer as GSM8K marks it (after '####', else the last number in the text)"))
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
        unknown = template_fields(self.target_template) - {"answer", "solution", "input"}
        if unknown:
            raise ValueError(f"target_template may only use {{answer}}, {{solution}} and {{input}}, not {sorted(unknown)}")
        if "solution" in template_fields(self.target_template) and self.task_type != "generation":
            raise ValueError(f"target_template uses {{solution}}, which only generation datasets have ({self.dataset} "
                             f"is a {self.task_type} task)")
        if self.placement == "before_bos" and (self.primer or self.train_primer):
            raise ValueError("placement 'before_bos' puts the soft tokens first: primer and train_primer must be empty")
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
    recolour: bool = Field(False, description=(
        "Re-colour the whitened states with the receiver's input-embedding statistics (x * std_r + mean_r), as "
        "seed 002's normalizer did (section 4): per dimension when sender and receiver have the same width, "
        "else with the mean over dimensions of the receiver's std and mean"))


class ResamplerSpec(StrictModel):
    dim: int = Field(512, ge=8, le=16_384, description="Width of the Perceiver latents")
    depth: int = Field(4, ge=1, le=64)
    heads: int = Field(8, ge=1, le=128)
    ffn_mult: int = Field(4, ge=1, le=16)

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        require_heads_divide(self.dim, self.heads, "dim", "heads")
        return self


class OutputSpec(StrictModel):
    scaling: Literal["rms", "tanh", "layernorm_tanh", "scale", "none"] = Field(
        "rms", description=("rms: x / rms(x) * scale (section 54); tanh: tanh(x) * scale (V7, section 25); "
                            "layernorm_tanh: tanh(LayerNorm(x)) * scale (V3, section 13); scale: x * scale, unbounded "
                            "(V15 continuous, section 52); none: x as the resampler gives it"))
    scale_init: Union[Literal["receiver_rms"], float] = Field(
        "receiver_rms", description="Initial scale: the receiver's token-embedding RMS, or a number")
    learnable_scale: bool = True


class VQSpec(StrictModel):
    """Vector quantisation of the resampler's output (straight-through): codebook loss + commitment x commitment
    loss, as in seed 002's phase 15 (sections 46-47) and the SST-2 signal check (section 57)."""

    codebook_size: int = Field(4096, ge=2, le=1_048_576)
    commitment: float = Field(0.25, ge=0)
    weight: float = Field(1.0, ge=0, description="Weight of the VQ loss in the total")
    distance: Literal["l2", "cosine"] = Field("l2", description="Nearest code by L2 distance or by cosine (section 47, issue 4)")
    init: Literal["scaled_normal", "uniform", "normal", "unit"] = Field("scaled_normal", description=(
        "Codebook init: N(0, 1/dim); nn.Embedding-style uniform +-1/codebook_size (section 47, issue 3: the loss "
        "exploded); N(0, 1); N(0, 1) rows scaled to norm 1 (its fix)"))
    pre_norm: bool = Field(False, description="LayerNorm before the quantizer (section 47, issue 3)")
    entropy_weight: float = Field(0.0, ge=0, description="Weight of the code-usage entropy bonus (section 47, issue 5: 0.1)")
    entropy_from: Literal["usage", "soft"] = Field("usage", description=(
        "usage: entropy of the batch's hard code histogram, as the report computed it (no gradient reaches the "
        "encoder through it); soft: of the softmax over negative distances"))


class FSQSpec(StrictModel):
    """Finite scalar quantisation (seed 002, sections 48-51): project to len(levels) dimensions, tanh, round each
    dimension to its levels (straight-through), project back."""

    levels: list[int] = Field(min_length=1, max_length=1024, description="Levels per dimension (8 x [8]; 32 x [5])")
    unique_code_weight: float = Field(0.0, ge=0, description=(
        "Weight of -log(distinct codes / tokens) computed from torch.unique, as section 50 had it: no gradient"))
    variance_weight: float = Field(0.0, ge=0, description="Weight of -log(variance of the quantized values), section 51")

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        if min(levels) < 2:
            raise ValueError(f"every FSQ level count must be at least 2, got {levels}")
        return levels


class FlowSpec(StrictModel):
    """A generative bridge (seed 002, phases 12-14, sections 39-45): a DiT denoiser trained with rectified flow to
    produce `latents` receiver input embeddings conditioned on the sender's states; Euler sampling with EMA
    weights. It replaces the resampler; the generated embeddings take the soft tokens' place (task.placement)."""

    latents: int = Field(128, ge=1, le=4096, description="Generated embeddings per item")
    width: int = Field(512, ge=8, le=16_384, description="The DiT's internal width")
    depth: int = Field(4, ge=1, le=64)
    heads: int = Field(8, ge=1, le=128)
    condition: Literal["mean_pool", "cross_attention", "hybrid"] = Field("mean_pool", description=(
        "mean_pool: masked mean of the source into the AdaLN condition (V12); cross_attention: AdaLN on t only, "
        "every block cross-attends to the source (V13); hybrid: attention pooling into AdaLN plus cross-attention (V14)"))
    target: Literal["answer", "question"] = Field("answer", description=(
        "What the flow learns to generate: the receiver's embeddings of '{answer}<eos>' (V12, V14) or of the "
        "question (V13), cut or padded with the EOS embedding to `latents`"))
    euler_steps: int = Field(10, ge=1, le=1000)
    ema_decay: float = Field(0.999, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        require_heads_divide(self.width, self.heads, "flow.width", "flow.heads")
        return self


class BridgeArchSpec(StrictModel):
    sender_layer: int = Field(-1, description="Sender block whose output is read (negative counts from the end)")
    soft_tokens: int = Field(ge=1, le=4096, description="K, soft tokens per recurrent step")
    recurrent_steps: int = Field(1, ge=1, le=64, description="Latent chain-of-thought steps, each adding K soft tokens (phase 19)")
    normalizer: NormalizerSpec = Field(default_factory=NormalizerSpec)
    resampler: ResamplerSpec = Field(default_factory=ResamplerSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    vq: VQSpec | None = None
    fsq: FSQSpec | None = None
    flow: FlowSpec | None = None
    sender_hidden_size: int | None = Field(None, ge=1, description="If set, must equal the sender's width under the profile")
    receiver_hidden_size: int | None = Field(None, ge=1, description="If set, must equal the receiver's width under the profile")

    @model_validator(mode="after")
    def _one_bottleneck(self):
        if self.vq is not None and self.fsq is not None:
            raise ValueError("bridge.vq and bridge.fsq exclude each other: choose one quantizer")
        if self.flow is not None and (self.vq is not None or self.fsq is not None or self.recurrent_steps != 1):
            raise ValueError("bridge.flow generates the embeddings itself: it takes no vq, fsq or recurrent_steps")
        return self


class InfoNCESpec(StrictModel):
    weight: float = Field(ge=0)
    temperature: float = Field(0.07, gt=0)


class AnchorSpec(StrictModel):
    weight: float = Field(ge=0)
    distance: Literal["mse", "cosine"] = Field(description="mse: V3 (section 15's scale bug); cosine: 1 - cos, V3.1")
    target: Literal["answer", "question"] = Field("answer", description=(
        "The receiver's embeddings of the training target (V3-V5, V7+) or of 'Question: {input}\\nAnswer:' (V6)"))


class LossesSpec(StrictModel):
    """Auxiliary losses of seed 002's GSM8K lineage, each added to the LM loss with its weight (0 / unset: off)."""

    reconstruction_cosine: float = Field(0.0, ge=0, description=(
        "V1: 1 - cos(mean of the soft tokens, masked mean of the sender states). Sender and receiver dimensions "
        "correspond by index, as in the report (two models' dimensions have no natural pairing; at equal width it "
        "is the identity); when the widths differ, the first min(widths) dimensions are compared"))
    info_nce: InfoNCESpec | None = Field(None, description="V2: InfoNCE on mean-pooled, normalised soft tokens")
    anchor: AnchorSpec | None = Field(None, description="V3+: pull the mean soft token to the mean target embedding")
    reconstruction_head: float = Field(0.0, ge=0, description=(
        "V8: a linear head (receiver -> sender width) on the raw resampler output, mean over tokens, MSE to the "
        "masked mean of the sender states"))
    bag_of_words: float = Field(0.0, ge=0, description=(
        "V9: a linear head over the sender's vocabulary on the max-pooled raw output, multi-hot BCE against the "
        "sender tokens of the input"))


class TokenWeightsSpec(StrictModel):
    """V11's bottleneck weighting: the first `first` target tokens weigh `weight`, the rest 1, normalised by the sum."""

    first: int = Field(ge=1, le=100_000)
    weight: float = Field(gt=0)


class TrainingSpec(StrictModel):
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    diversity_weight: float = Field(0.1, ge=0, description="Weight of the batch diversity loss (mean off-diagonal cosine)")
    losses: LossesSpec = Field(default_factory=LossesSpec)
    token_weights: TokenWeightsSpec | None = None
    on_nonfinite_loss: Literal["fail", "stop"] = Field("fail", description=(
        "fail: a NaN/Inf training loss stops the run with an error naming the step; stop: training ends there, the "
        "last finite weights are evaluated and the step is recorded (to reproduce a reported divergence)"))
    diagnostics: bool = Field(False, description=(
        "Log per step the output scale, the batch similarity of the soft tokens, the variance of the resampler's "
        "(or FSQ's) output and the quantizer's code statistics (the curves of seed 002's lineage)"))
    quick_eval_every: int = Field(100, ge=1, description="Steps between quick evaluations (scored accuracy)")
    quick_eval_items: int = Field(32, ge=1, le=100_000, description=(
        "Development items each quick evaluation scores (the first of task.dev_items; never evaluation items)"))
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
    steps: int | None = Field(None, ge=1, le=10_000_000, description=(
        "Training steps; default: the bridge's `training.steps` at its batch size, so the two trained methods get "
        "equal budgets (a claim comparing them is not testable when the budgets differ)"))
    lr: float = Field(3e-3, gt=0)
    soft_tokens: int | None = Field(None, ge=1, le=4096, description="Default: the bridge's soft-token count")


class SelectionSpec(StrictModel):
    """A selection run: settings chosen by measurement on the development split, never on evaluation items.

    Every (sender layer, learning rate) pair trains one bridge with the spec's first training seed and is scored
    on the `task.dev_items` development items; each prompt-tuning learning rate is tried the same way. The
    analysis names the best of each (ties go to the earlier grid entry); the specs that use the choice say so."""

    sender_layers: list[int] = Field(min_length=1, max_length=64)
    lrs: list[float] = Field(min_length=1, max_length=64)
    prompt_tuning_lrs: list[float] = Field(default_factory=list, max_length=64)
    scoring: Literal["scored", "generation"] = Field("scored", description="Which accuracy on the development items decides")

    @field_validator("lrs", "prompt_tuning_lrs")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"learning rates must be distinct and positive, got {values}")
        return values

    @field_validator("sender_layers")
    @classmethod
    def _distinct_layers(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"sender_layers must not repeat, got {values}")
        return values


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
    selection: SelectionSpec | None = Field(None, description=(
        "Make this a selection run on the development split instead of an evaluation (see SelectionSpec)"))

    @model_validator(mode="after")
    def _quick_eval_reads_development_items(self):
        if self.training.quick_eval_items > self.task.dev_items:
            raise ValueError(f"training.quick_eval_items ({self.training.quick_eval_items}) exceeds task.dev_items "
                             f"({self.task.dev_items}): quick evaluation reads development items only")
        return self

    def prompt_tuning_steps(self) -> int:
        """Prompt tuning's steps: its own when set, else the bridge's (equal budgets)."""
        return self.evaluation.prompt_tuning.steps or self.training.steps

    @model_validator(mode="after")
    def _fits_the_models(self, info: ValidationInfo):
        profile = (info.context or {}).get("profile")
        if profile is None:
            return self
        sender, receiver = model_entry(self.sender), model_entry(self.receiver)
        if profile not in sender.sources or profile not in receiver.sources:
            return self  # not runnable under this profile; `harness run` says so
        n_layers, sender_width = sender.sources[profile].dims()
        layers = [("bridge.sender_layer", self.bridge.sender_layer)]
        if self.selection is not None:
            layers += [("selection.sender_layers", layer) for layer in self.selection.sender_layers]
        for field, layer in layers:
            if not -n_layers <= layer < n_layers:
                raise ValueError(f"{field} {layer} is out of range for {self.sender} ({n_layers} layers under the "
                                 f"{profile} profile; valid: {-n_layers}..{n_layers - 1})")
        receiver_width = receiver.sources[profile].dims()[1]
        for role, declared, actual, name in (("sender", self.bridge.sender_hidden_size, sender_width, self.sender),
                                             ("receiver", self.bridge.receiver_hidden_size, receiver_width, self.receiver)):
            if declared is not None and declared != actual:
                raise ValueError(f"bridge.{role}_hidden_size is {declared}, but {name} has hidden size {actual} "
                                 f"under the {profile} profile")
        return self

    @model_validator(mode="after")
    def _flow_trains_alone(self):
        """The flow bridge trains on its velocity loss only and has no output scale for noise soft tokens."""
        if self.bridge.flow is None:
            return self
        losses = self.training.losses
        if (losses.reconstruction_cosine or losses.info_nce or losses.anchor or losses.reconstruction_head
                or losses.bag_of_words or self.training.token_weights or self.training.diversity_weight):
            raise ValueError("bridge.flow trains on the rectified-flow loss alone: remove training.losses, "
                             "training.token_weights and training.diversity_weight")
        unsupported = [m for m in ("noise", "prompt_tuning") if m in self.evaluation.methods]
        if unsupported:
            raise ValueError(f"evaluation.methods {unsupported} need the regression bridge; bridge.flow has no output "
                             f"scale to draw noise at")
        return self

    def training_seeds(self) -> list[int]:
        """The seeds the seeded methods run with; the first one's rows also hold the deterministic methods."""
        return list(self.training.seeds) or [self.seed]

    def model_names(self) -> list[str]:
        return [self.sender, self.receiver]

    def code_parts(self) -> tuple[str, ...]:
        """The methods' modules a run loads: the latent bridge (with the noise baseline at its scale) or the flow
        bridge, prompt tuning when it is evaluated or selected (a flow spec trains only the flow), and zero-shot
        continuation scoring when `task.continuation` is set."""
        if self.selection is not None:
            return ("latent_bridge", *(("prompt_tuning",) if self.selection.prompt_tuning_lrs else ()))
        scoring = ("continuation",) if self.task.continuation is not None else ()
        if self.bridge.flow is not None:
            return ("flow_bridge", *scoring)
        return ("latent_bridge", *(("prompt_tuning",) if "prompt_tuning" in self.evaluation.methods else ()), *scoring)

    def data_needs(self) -> list[tuple[str, str]]:
        if self.task.dataset == PASSKEY:
            return []
        return sorted({(self.task.dataset, self.task.train_split), (self.task.dataset, self.task.eval_split)})


SPEC_MODEL = BridgeSpec
