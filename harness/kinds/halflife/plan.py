"""Half-life's workload: one trajectory at a time (batch 1) over the whole generated sequence; the
optional pretraining is a backward through the whole model."""

from __future__ import annotations

from harness.kinds.contract import Forward, Workload
from harness.plan import estimated_tokens, model_size
from registry.kinds.halflife import HalfLifeSpec, RandomPrompt


def workload(spec: HalfLifeSpec, profile: str) -> Workload:
    prompt = max(p.random_tokens if isinstance(p, RandomPrompt) else estimated_tokens(p.text) + 1 for p in spec.prompts)
    perturbation = estimated_tokens(spec.perturbation.text) if spec.perturbation.enabled else 0
    sequence = prompt + spec.chunks * (spec.chunk_tokens + perturbation)
    forwards = [Forward("generation", spec.model, 1, sequence)]
    tokens = len(spec.prompts) * len(spec.seeds) * len(spec.arms()) * sequence
    trainable = 0
    if spec.pretrain is not None:
        forwards.append(Forward("pretraining", spec.model, spec.pretrain.batch_size, spec.pretrain.seq_len, trains=True))
        tokens += spec.pretrain.steps * spec.pretrain.batch_size * spec.pretrain.seq_len
        trainable = model_size(spec.model, profile, spec.dtype, spec.quantization).parameters
    return Workload(models=[spec.model], forwards=forwards, tokens=tokens, trainable_parameters=trainable)


def dry_run_overrides(spec: HalfLifeSpec, steps: int, items: int, tokens: int | None) -> list[str]:
    """A dry run: the first seed, `steps` chunks of at most `tokens` tokens (and `steps` pretraining steps)."""
    out = [f"seeds=[{spec.seeds[0]}]", f"chunks={min(spec.chunks, steps)}"]
    if tokens is not None:
        out.append(f"chunk_tokens={min(tokens, spec.chunk_tokens)}")
    if spec.pretrain is not None:
        out.append(f"pretrain.steps={steps}")
        if spec.pretrain.seeds:
            out.append(f"pretrain.seeds=[{spec.pretrain.seeds[0]}]")
    return out
