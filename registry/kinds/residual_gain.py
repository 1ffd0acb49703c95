"""Residual-stream gain across layers and model families (seed 001)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from registry.common import DType, ModelList, ModelName, SpecBase, StrictModel


class Prompt(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Short identifier used in metric names")
    text: str = Field(min_length=1)
    category: str = ""


class BaseInstructPair(StrictModel):
    """Two checkpoints of one model, before and after instruction tuning / RLHF."""

    base: ModelName
    instruct: ModelName


class GainRatio(StrictModel):
    """One model's last-layer gain over another's on one prompt (and their RoPE theta ratio), as the report
    compares them ("Ratio: 0.35" for LLaMA-3.1 over Mistral)."""

    numerator: ModelName
    denominator: ModelName
    prompt: str = Field(description="A prompt id from `prompts`")


class ResidualGainSpec(SpecBase):
    """Per-layer residual-stream norms and gains, W_U spectral norm and entropy per prompt.

    Definitions (norms are L2 over the hidden dimension; index 0 is the input of the first block):
    - gain of block l = ||h_l|| / ||h_{l-1}||; the embedding->first-layer gain is block 0's gain;
    - last-layer gain (pre-norm) = ||h_last|| / ||h_{last-1}|| with both taken before the final norm;
    - last-layer gain (post-norm) = ||final_norm(h_last)|| / ||h_{last-1}||, which is what
      transformers' hidden_states[-1] / hidden_states[-2] gives;
    - cumulative energy = product of all block gains = ||h_last|| / ||h_0||;
    - effective amplification = last-layer gain (pre-norm) x sigma_max(W_U);
    - plateau norm = median (and range) of the block-output norms after the early region
      (`early_layers_fraction`) and before the last block, where the report sees a "stable plateau".
    """

    kind: Literal["residual_gain"]
    models: ModelList
    prompts: list[Prompt] = Field(min_length=1)
    pairs: list[BaseInstructPair] = Field(default_factory=list, description="Base-vs-instruct comparisons")
    ratios: list[GainRatio] = Field(default_factory=list, description="Cross-model last-gain ratios to report")
    early_layers_fraction: float = Field(
        0.25, gt=0, le=1, description="The 'largest early gain' is searched in this leading fraction of blocks"
    )
    dtype: DType | None = Field(None, description="Override the catalog dtype of every model")
    add_special_tokens: bool = Field(True, description="Let the tokenizer add BOS as the model expects")

    @field_validator("prompts")
    @classmethod
    def _unique_prompt_ids(cls, prompts: list[Prompt]) -> list[Prompt]:
        ids = [p.id for p in prompts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"prompt ids must be unique; repeated: {', '.join(dupes)}")
        return prompts

    @model_validator(mode="after")
    def _pairs_use_listed_models(self):
        for i, pair in enumerate(self.pairs):
            for role in ("base", "instruct"):
                if getattr(pair, role) not in self.models:
                    raise ValueError(f"pairs.{i}.{role}: {getattr(pair, role)!r} is not in `models`")
        prompt_ids = {p.id for p in self.prompts}
        for i, ratio in enumerate(self.ratios):
            for role in ("numerator", "denominator"):
                if getattr(ratio, role) not in self.models:
                    raise ValueError(f"ratios.{i}.{role}: {getattr(ratio, role)!r} is not in `models`")
            if ratio.prompt not in prompt_ids:
                raise ValueError(f"ratios.{i}.prompt: {ratio.prompt!r} is not a prompt id ({', '.join(sorted(prompt_ids))})")
        return self

    def model_names(self) -> list[str]:
        return list(self.models)


SPEC_MODEL = ResidualGainSpec
