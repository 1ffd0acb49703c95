"""Alignment's workload: both models resident; calibration forwards one text at a time; injected
generation one prompt at a time; adapters backpropagate through the target above the injected layer."""

from __future__ import annotations

from harness.plan import Forward, Workload, estimated_tokens
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
