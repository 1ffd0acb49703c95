"""The fluent reference an injected generation is judged against, from the records alone (no torch: the analysis
and the view read it too)."""

from __future__ import annotations

from collections import defaultdict


def reference_nll(records: list[dict]) -> dict[str, float]:
    """Per model, the mean NLL of its own greedy continuations of the prompts (the 'fluent' reference)."""
    by_model = defaultdict(list)
    for r in records:
        if r["record"] == "generation" and r["condition"] == "baseline" and r["nll"] is not None:
            by_model[r["target"]].append(r["nll"])
    return {m: sum(v) / len(v) for m, v in by_model.items()}
