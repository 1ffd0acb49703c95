"""Residual gain's workload: one forward per prompt and model; models are loaded in turn."""

from __future__ import annotations

from harness.kinds.contract import Forward, Workload
from harness.plan import estimated_tokens


def workload(spec, profile: str) -> Workload:
    longest = max(estimated_tokens(p.text) for p in spec.prompts) + 1  # + BOS
    total = sum(estimated_tokens(p.text) + 1 for p in spec.prompts) * len(spec.models)
    return Workload(models=list(spec.models), forwards=[Forward("prompt", m, 1, longest) for m in spec.models],
                    tokens=total, one_at_a_time=True)


def dry_run_overrides(spec, steps: int, items: int, tokens: int | None) -> list[str]:
    """A dry run measures every prompt: one forward each, already small."""
    return []
