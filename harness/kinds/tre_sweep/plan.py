"""TRE sweep's workload: batched sampling per model (models in turn), trials x conditions x prompts."""

from __future__ import annotations

from harness.kinds.contract import Forward, Workload
from harness.plan import estimated_tokens

CHAT_TEMPLATE_TOKENS = 30  # room for a chat template around each prompt


def workload(spec, profile: str) -> Workload:
    prompts = spec.selected_prompts()
    batch = min(spec.batch_size or len(prompts), len(prompts))
    longest = max(estimated_tokens(p.text) for p in prompts) + CHAT_TEMPLATE_TOKENS + spec.max_new_tokens
    per_model = sum(estimated_tokens(p.text) + CHAT_TEMPLATE_TOKENS + spec.max_new_tokens for p in prompts)
    tokens = per_model * spec.trials * len(spec.conditions) * len(spec.models)
    return Workload(models=list(spec.models), forwards=[Forward("generation", m, batch, longest) for m in spec.models],
                    tokens=tokens, one_at_a_time=True)


def dry_run_overrides(spec, steps: int, items: int, tokens: int | None) -> list[str]:
    """A dry run: one trial of the first prompt of each category, at most `tokens` generated tokens."""
    return ["trials=1", "use_per_category=1"] + ([] if tokens is None else [f"max_new_tokens={min(tokens, spec.max_new_tokens)}"])
