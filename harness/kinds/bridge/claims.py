"""Latent bridge, the report's claims about one task: what each claim id compares, and its evidence from a run.

A spec lists the claims the report makes about its task under `claims:` with the section and the report's own
numbers (`reported`: each compared method's rate by its method name, `chance`, and `n` where the report gives
it). The claims engine (harness/claims.py) decides every verdict; this module only says which methods each claim
pairs, in which direction, and which methods a comparison rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import claims as C
from registry.common import ClaimRef

NAMES = {"bridge": "bridge", "sender_text": "sender text", "receiver_text": "receiver text",
         "sender_few_shot": "sender 5-shot", "receiver_few_shot": "receiver 5-shot", "text_relay": "text relay",
         "noise": "noise soft tokens", "prompt_tuning": "prompt tuning", "random": "random"}
TRAINED = ("bridge", "prompt_tuning")
COLLAPSE_FRACTION = 0.1  # this project's: "collapsed" = fewer distinct answers than 10% of the gold answers' distinct


@dataclass
class ClaimData:
    """What a run gives the bridge claims: the analysis (its per-item outcomes and metrics) and the spec."""

    spec: object
    analysis: object

    def outcomes(self, method: str, kind: str = "generation") -> dict:
        return self.analysis.outcomes.get(f"{method}.{kind}", {})

    def has(self, method: str) -> bool:
        return bool(self.outcomes(method))

    def chance(self) -> tuple[float, str]:
        """The level a reference must beat: the larger of the random baseline's observed rate on these items and the
        analytic chance (a lucky-low random draw never lowers the floor; 0 for open answers)."""
        labels = self.spec.task.label_names()
        analytic = 1 / len(labels) if labels else 0.0
        random = self.outcomes("random")
        if random:
            (hits,) = random.values()
            observed = float(sum(hits.values()) / len(hits))
            if observed >= analytic:
                return observed, "the random baseline"
        return (analytic, "chance") if labels else (0.0, "chance (open answers)")

    def budget(self, method: str) -> str:
        """The steps the run's training log shows (every seed), else the spec's; the batch is the spec's."""
        logged = {v for k, v in self.analysis.metrics.items() if k.startswith(f"training.{method}.") and "steps_run" in k}
        steps = "/".join(f"{v:.0f}" for v in sorted(logged)) if logged else \
            self.spec.training.steps if method == "bridge" else self.spec.prompt_tuning_steps()
        return f"{steps} steps x batch {self.spec.training.batch_size}"


def _reference(data: ClaimData | None, method: str) -> C.Reference:
    if data is None:
        return C.Reference(NAMES[method], {}, 0.0)
    chance, name = data.chance()
    return C.Reference(NAMES[method], data.outcomes(method), chance, name)


def _paired(ref: ClaimRef, data: ClaimData | None, other: str, direction: str, references: list[str]) -> C.Evidence:
    if data is not None and not data.has(other):
        return C.Untestable(f"{NAMES[other]} was not evaluated in this run")
    numbers = ref.reported
    reported = (numbers["bridge"], numbers[other]) if "bridge" in numbers and other in numbers else None
    trained = [m for m in ("bridge", other) if m in TRAINED]
    return C.Paired(
        "bridge", NAMES[other], data.outcomes("bridge") if data else {}, data.outcomes(other) if data else {},
        direction, valid_a=data.outcomes("bridge", "valid") if data else None,
        valid_b=(data.outcomes(other, "valid") or None) if data else None,
        references=[_reference(data, m) for m in references],
        budgets={NAMES[m]: data.budget(m) for m in trained} if data and len(trained) > 1 else None,
        reported=reported, reported_n=int(numbers["n"]) if "n" in numbers else None,
        reported_chance={**{NAMES[m]: numbers[m] for m in references if m in numbers},
                         **({"chance": numbers["chance"]} if "chance" in numbers else {})})


def _above(*others: str, references: dict[str, list[str]] | None = None):
    """The bridge beats each of `others`; each comparison rests on its own baseline unless `references` says."""
    def evidence(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
        return [_paired(ref, data, other, "above", (references or {}).get(other, [other])) for other in others]
    return evidence


def _below_better_text(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """The bridge falls below the better of the two models reading the text (better: over all seeds here; by the
    report's numbers when there is no run)."""
    texts = ("sender_text", "receiver_text")
    if data is None:
        better = max(texts, key=lambda m: ref.reported.get(m, -1))
    else:
        present = [m for m in texts if data.has(m)]
        if not present:
            return [C.Untestable("neither model read the text in this run")]
        better = max(present, key=lambda m: data.analysis.metrics.get(f"{m}.generation.accuracy", -1))
    return [_paired(ref, data, better, "below", [better])]


def _collapse(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
    """Per training run: the bridge gives fewer distinct answers than a fraction of the gold answers' distinct values."""
    fraction = ref.threshold if ref.threshold is not None else COLLAPSE_FRACTION
    if data is None:
        return [C.PerRun("answers collapse", {}, {})]
    seeds = data.analysis.seed_metrics or {None: data.analysis.metrics}
    happened, detail = {}, {}
    for seed, metrics in seeds.items():
        distinct, gold = metrics.get("bridge.distinct_answers"), metrics.get("gold.distinct_answers")
        if distinct is None or gold is None:
            return [C.Untestable("the run has no parsed answers to count")]
        happened[seed] = distinct < fraction * gold
        detail[seed] = (f"{distinct:.0f} distinct answers for {gold:.0f} distinct gold answers (threshold "
                        f"{fraction:.0%} of them, this project's)")
    return [C.PerRun("answers collapse", happened, detail)]


CATALOGUE: dict[str, C.ClaimKind] = {
    "bridge_above_text_relay": C.ClaimKind(
        "The bridge beats the text relay",
        # the relay passes through the receiver: the comparison rests on the relay and on the receiver reading the text
        _above("text_relay", references={"text_relay": ["receiver_text", "text_relay"]})),
    "bridge_above_both_texts": C.ClaimKind(
        "Super-additive: the bridge beats both models' own zero-shot text", _above("sender_text", "receiver_text")),
    "bridge_above_few_shot": C.ClaimKind(
        "The bridge beats 5-shot prompting of either model", _above("sender_few_shot", "receiver_few_shot")),
    "bridge_above_prompt_tuning": C.ClaimKind(
        "The bridge beats prompt tuning on the receiver (equal training budgets)", _above("prompt_tuning")),
    "bridge_below_better_text": C.ClaimKind(
        "The bridge falls below the better model's own zero-shot text", _below_better_text),
    "answers_collapse": C.ClaimKind(
        "The bridge's answers collapse to a few numbers whatever the question", _collapse),
}
