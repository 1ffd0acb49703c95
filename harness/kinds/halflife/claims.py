"""Half-life, the report's claims (seed 004): its toy's findings and its expectation for learned routing.

The unit is the trajectory (a prompt and a sampling seed, per training seed when the model is trained first), on
the baseline arm. Trajectories that are identical by construction (greedy decoding of one prompt under another
sampling seed) count once: they share a fingerprint (the tokens generated). Pressure is this project's
definition (the report gives none); thresholds and the margin of "constant" are this project's too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import claims as C
from registry.common import ClaimRef


@dataclass
class ClaimData:
    per: dict  # (train seed, prompt, seed, arm) -> trajectory statistics
    fingerprints: dict  # (train seed, prompt, seed, arm) -> the trajectory's tokens


def _values(data: ClaimData, pick) -> tuple[dict, dict]:
    """train seed -> {trajectory: value} on the baseline arm, and each trajectory's fingerprint: its tokens under
    every training seed (two trajectories are one replicate only if they are identical under each)."""
    values: dict = {}
    prints: dict = {}
    for key, stats in data.per.items():
        train_seed, prompt, seed, arm = key
        if arm != "baseline":
            continue
        unit = f"{prompt}/{seed}"
        value = pick(stats)
        if value is None:
            continue
        values.setdefault(train_seed if train_seed is not None else 0, {})[unit] = value
        prints.setdefault(unit, {})[train_seed] = data.fingerprints[key]
    return values, {unit: tuple(sorted(by_seed.items(), key=lambda kv: str(kv[0]))) for unit, by_seed in prints.items()}


def _constant(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """Pressure stays constant: each trajectory's change over the run (slope x (chunks - 1)) relative to its first
    chunk's pressure is 0 within the margin."""
    r = ref.reported
    if data is None:
        return [C.NoChange("relative pressure change over the run", {}, ref.margin, r.get("relative_change"))]
    values, prints = _values(data, lambda s: s["slope"] * (s["chunks"] - 1) / s["p_first"] if s["p_first"] else None)
    return [C.NoChange("pressure change over the run, relative to the first chunk", values, ref.margin,
                       r.get("relative_change"), fingerprints=prints, unit="trajectories", fmt="+.3f")]


def _reached(direction: str):
    def evidence(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
        # "never reached": under 10% of trajectories; "reached": most of them (both this project's readings)
        threshold = ref.threshold if ref.threshold is not None else 0.1 if direction == "below" else 0.5
        r = ref.reported
        reported = dict(reported=r.get("reached"), reported_n=int(r["trajectories"]) if "trajectories" in r else None)
        if data is None:
            return [C.Level("trajectories reaching half their first pressure", {}, threshold, direction,
                            chosen_by="this project", **reported)]
        values, prints = _values(data, lambda s: float(s["half_life"] is not None))
        return [C.Level("share of trajectories reaching half their first pressure", values, threshold, direction,
                        chosen_by="this project", fingerprints=prints, unit="trajectories", **reported)]
    return evidence


def _collapse(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """Routing entropy falls over the run: (first - last) / first above 0."""
    r = ref.reported
    if data is None:
        return [C.Level("entropy collapse", {}, 0.0, "above", reported=r.get("collapse"), percent=False,
                        bounds=(-math.inf, 1.0))]
    values, prints = _values(data, lambda s: s["collapse"])
    return [C.Level("routing entropy collapse (first - last) / first", values, 0.0, "above", reported=r.get("collapse"),
                    fingerprints=prints, unit="trajectories", percent=False, bounds=(-math.inf, 1.0))]


CATALOGUE: dict[str, C.ClaimKind] = {
    "toy_pressure_constant": C.ClaimKind("Toy: routing pressure stays constant (0.6404 -> 0.6403)", _constant),
    "toy_half_life_not_reached": C.ClaimKind("Toy: the half-life is never reached (infinite)", _reached("below")),
    "toy_entropy_collapses": C.ClaimKind("Toy: routing entropy collapses (0.95 -> 0.53, 44%)", _collapse),
    "learned_routing_decays": C.ClaimKind(
        "Learned routing shows natural pressure decay: the half-life is reached (expected 15-25 chunks)",
        _reached("above")),
}
