"""Residual gain, the report's claims (seed 001): H18, "energy ∝ uncertainty", as a correlation across prompts of
the pre-norm last-layer gain with the next-token entropy, in every model the run measured."""

from __future__ import annotations

from dataclasses import dataclass

from harness import claims as C
from registry.common import ClaimRef


@dataclass
class ClaimData:
    per_model: dict  # display name -> (last-layer gains, next-token entropies), one value per prompt


def _h18(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    r = ref.reported
    reported = dict(reported_r=r.get("r"), reported_n=int(r["n"]) if "n" in r else None)
    if data is None:
        return [C.Correlation("last-layer gain vs next-token entropy", [], [], "positive", **reported)]
    return [C.Correlation(f"last-layer gain vs next-token entropy ({name})", gains, entropies, "positive", **reported)
            for name, (gains, entropies) in data.per_model.items()]


CATALOGUE: dict[str, C.ClaimKind] = {
    "h18_gain_rises_with_entropy": C.ClaimKind(
        "H18: the last-layer gain rises with the next-token entropy (energy ∝ uncertainty)", _h18),
}
