"""Alignment, the report's claims (seed 003): injection without a map and with Procrustes (section 1), and the
linear adapter's training log (section 2, 'Critical question').

Section-1 claims pool both directions; the unit is one generation (a direction, depth and prompt) for levels, and
the prompt for comparisons between depths. A generation's level is this project's automatic scale
(analysis.level: the worse of its perplexity and repetition readings, so a loop is never fluent). Adapter claims
are decided per training run (an adapter, direction and training seed).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import claims as C
from registry.common import ClaimRef

FAILED = ("garbage", "fragments", "token loop", "empty")
# a level as a score for comparisons: higher is better (the scale of analysis.level, best first)
SCORES = {"fluent": 5, "partial sentences": 4, "some coherent phrases": 3, "fragments": 2, "garbage": 1,
          "token loop": 1, "empty": 0}


@dataclass
class ClaimData:
    levels: dict  # (direction, map, depth, prompt index) -> level
    depths: list
    cka_shift: float | None  # the largest |CKA after - before| over the Procrustes fits
    adapter_runs: dict  # "adapter (type), direction, seed s" -> {epoch: epoch row}


def _share(ref: ClaimRef, data: ClaimData | None, map_name: str, name: str, depth=None,
           bad=FAILED) -> C.Evidence:
    threshold = ref.threshold if ref.threshold is not None else 0.8
    r = ref.reported
    reported = dict(reported=r.get("share"), reported_n=int(r["generations"]) if "generations" in r else None)
    if data is None:
        return C.Level(name, {}, threshold, "above", chosen_by="this project", **reported)
    units = {f"{d}/{f:g}/{p}": float(level in bad) for (d, m, f, p), level in data.levels.items()
             if m == map_name and (depth is None or f == depth)}
    if not units:
        return C.Untestable(f"the run has no {map_name!r} generations" + (f" at depth {depth:g}" if depth is not None
                                                                          else ""))
    return C.Level(name, {0: units}, threshold, "above", chosen_by="this project", unit="generations", **reported)


def _fails(ref, data):
    return [_share(ref, data, "none", "share of no-map generations at garbage, fragments, token loop or empty")]


def _procrustes_fails(ref, data):
    return [_share(ref, data, "procrustes", "share of Procrustes generations at garbage, fragments, token loop or empty")]


def _last_layer_loops(ref, data):
    if data is not None and 1.0 not in data.depths:
        return [C.Untestable("the run injects no last layer (depth 1)")]
    ref = ref.model_copy(update={"threshold": ref.threshold if ref.threshold is not None else 0.5})
    return [_share(ref, data, "none", "share of last-layer no-map generations that loop", 1.0, ("token loop",))]


def _middle_best(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """No-map quality at middle depths (strictly between 0.25 and 1), per prompt, against each end depth."""
    if data is None:
        return [C.Untestable("no run")]
    middles = [f for f in data.depths if 0.25 < f < 1.0]
    ends = sorted({min(data.depths), max(data.depths)} - set(middles))
    if not middles or not ends:
        return [C.Untestable("the run's depths leave no middle depth strictly between 0.25 and 1, or no end depth")]

    def scores(depths):
        by_prompt: dict = {}
        for (d, m, f, p), level in data.levels.items():
            if m == "none" and f in depths:
                by_prompt.setdefault(f"{d}/{p}", []).append(SCORES[level])
        return {unit: sum(v) / len(v) for unit, v in by_prompt.items()}

    middle = scores(middles)
    return [C.Paired(f"middle depths {', '.join(f'{f:g}' for f in middles)}", f"depth {end:g}", {0: middle},
                     {0: scores([end])}, "above", unit="prompts (quality level score 0-5)", scale=1.0,
                     bounds=(0.0, 5.0)) for end in ends]


def _cka(ref, data):
    shift = "" if data is None or data.cka_shift is None else (
        f"; the largest |CKA after - before| over the Procrustes fits is {data.cka_shift:.4f}"
        + (" (a map from a wider source also projects)" if data.cka_shift > 1e-6 else ""))
    return [C.ByConstruction("linear CKA is invariant to orthogonal maps and isotropic scaling, so Procrustes "
                             "cannot move it where the map is square" + shift)]


def _contrastive_at_chance(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """The contrastive term stays at chance: InfoNCE - ln(batch) at the last epoch is 0 within the margin."""
    if data is None:
        return [C.NoChange("InfoNCE - ln B at the last epoch", {}, ref.margin,
                           ref.reported.get("infonce_minus_chance"))]
    values: dict = {}
    for run, epochs in data.adapter_runs.items():
        last = epochs[max(epochs)]
        if last.get("infonce_minus_chance") is not None:
            seed = run.rsplit("seed ", 1)[-1]
            values.setdefault(seed, {})[run.rsplit(", seed", 1)[0]] = last["infonce_minus_chance"]
    if not values:
        return [C.Untestable("no adapter trained with the contrastive term")]
    return [C.NoChange("InfoNCE - ln B at the last epoch", values, ref.margin, ref.reported.get("infonce_minus_chance"),
                       unit="adapters and directions")]


def _epoch_one(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """Per training run: the validation loss falls in epoch 1 and epoch 2 takes off under a quarter of that."""
    if data is None:
        return [C.PerRun("epoch 1 does most, then a plateau", {}, {}, reported=True)]
    happened, detail = {}, {}
    for run, epochs in data.adapter_runs.items():
        if not {0, 1, 2} <= set(epochs):
            return [C.Untestable(f"{run} has fewer than two epochs")]
        v0, v1, v2 = (epochs[e]["val_loss"] for e in (0, 1, 2))
        happened[run] = (v0 - v1) > 0 and (v1 - v2) < 0.25 * (v0 - v1)
        detail[run] = f"validation loss {v0:.3f} -> {v1:.3f} -> {v2:.3f}"
    return [C.PerRun("epoch 1 does most (epoch 2 under a quarter of its gain, this project's rule)", happened, detail,
                     reported=True)]


def _converges(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    if data is None:
        return [C.Untestable("no run")]
    most = max((max(epochs) for epochs in data.adapter_runs.values()), default=0)
    if most < 7:
        return [C.Untestable(f"the adapters train {most} epochs, fewer than the claim's 5-7")]
    happened, detail = {}, {}
    for run, epochs in data.adapter_runs.items():
        best = min(epochs.values(), key=lambda c: c["val_loss"])["epoch"]
        fired = any(c["stopped"] for c in epochs.values())
        happened[run] = fired and 5 <= best <= 7
        detail[run] = f"lowest validation loss at epoch {best}" + ("; early stopping fired" if fired else "")
    return [C.PerRun("converges by epoch 5-7", happened, detail)]


CATALOGUE: dict[str, C.ClaimKind] = {
    "no_map_fails": C.ClaimKind("Without a map, cross-model injection fails at every layer (garbage, fragments, "
                                "loops)", _fails),
    "middle_layers_best": C.ClaimKind("Without a map, middle layers (16-24 of 32) do best", _middle_best),
    "last_layer_loops": C.ClaimKind("Injecting the last layer collapses into a token loop", _last_layer_loops),
    "procrustes_fails": C.ClaimKind("Procrustes does not rescue injection: its generations still fail",
                                    _procrustes_fails),
    "cka_shows_procrustes": C.ClaimKind("CKA before and after would show Procrustes' effect (the report's plan)", _cka),
    "contrastive_at_chance": C.ClaimKind("The contrastive loss is stable at ~2.98 = ln 20 (chance)",
                                         _contrastive_at_chance),
    "epoch_one_most_gain": C.ClaimKind("Epoch 1 does most of the work (-28%), epoch 2 plateaus", _epoch_one),
    "converges_by_epoch_5_7": C.ClaimKind("Training converges by epoch 5-7 (early stopping saves 40-50%)", _converges),
}
