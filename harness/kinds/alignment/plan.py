"""Alignment's workload: both models resident; calibration forwards one text at a time; injected
generation one prompt at a time; adapters backpropagate through the target above the injected layer."""

from __future__ import annotations

import json

from harness.kinds.contract import Forward, Workload
from harness.plan import estimated_tokens
from registry.kinds.alignment import AlignmentSpec


def workload(spec: AlignmentSpec, profile: str) -> Workload:
    text = estimated_tokens("x" * spec.calibration.max_chars) + 1
    prompt = max(estimated_tokens(p) for p in spec.prompts) + 1 + spec.max_new_tokens
    models = spec.model_names()
    forwards = [Forward("calibration", m, 1, text) for m in models] + [Forward("generation", m, 1, prompt) for m in models]
    generations = len(spec.directions()) * len(spec.layers) * len(spec.maps) * len(spec.prompts) + 2 * len(spec.prompts)
    tokens = 2 * spec.calibration.texts * text + generations * prompt
    for batch in sorted({adapter.batch_size for adapter in spec.adapters}):  # either model is the target in turn
        forwards += [Forward("adapter training", m, batch, text, trains=True) for m in models]
    for adapter in spec.adapters:
        tokens += adapter.epochs * spec.calibration.texts * text * len(spec.directions()) * len(adapter.layers)
    return Workload(models=models, forwards=forwards, tokens=tokens)


def dry_run_overrides(spec: AlignmentSpec, steps: int, items: int, tokens: int | None) -> list[str]:
    """A dry run: `items` calibration texts (at least the 4 a fit needs; the Procrustes fit is allowed to be
    rank-deficient), the first two prompts, one adapter epoch, one training seed and at most `tokens` generated
    tokens."""
    out = [f"calibration.texts={max(4, items)}", f"prompts={json.dumps(spec.prompts[:2])}",
           "calibration.rank_deficient=allow"]  # a few texts give fewer pairs than the width; the fit still runs
    out += [f"adapters.{i}.epochs=1" for i in range(len(spec.adapters))]
    if spec.training_seeds:
        out.append(f"training_seeds=[{spec.training_seeds[0]}]")
    if tokens is not None:
        out.append(f"max_new_tokens={min(tokens, spec.max_new_tokens)}")
    return out
