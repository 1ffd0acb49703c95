"""TRE sampling sweep (seed 000): activation-driven vs random vs fixed sampling parameters.

`run` calibrates each model, then generates every (prompt, trial) under every condition with
the same per-(prompt, trial) random stream, and stores the text and the parameters chosen at
every token. `analysis.analyze` scores the texts and computes every statistic from those records.
Definitions (controller, mapping, metrics) are in registry/kinds/tre_sweep.py.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.context import RunContext
from harness.kinds.contract import RunOutput
from harness.kinds.tre_sweep.calibration import calibrate
from harness.kinds.tre_sweep.controller import BaselineController, NeuralController, RandomController
from harness.kinds.tre_sweep.generation import generate_rows
from harness.kinds.tre_sweep.sampling import stream_seed, uniform_stream
from harness.models import NonFiniteActivationError
from registry.errors import SpecError
from registry.kinds.tre_sweep import SAMPLING_PARAMS as PARAMS, TRESweepSpec


# ----------------------------------------------------------------------------- run
def generation_seed(spec_seed: int, prompt_id: str, trial: int) -> int:
    """The sampling stream of one (prompt, trial); every condition uses it, so conditions are paired."""
    return stream_seed("tre-sample", spec_seed, prompt_id, trial)


def random_condition_seed(spec_seed: int, prompt_id: str, trial: int) -> int:
    return stream_seed("tre-random-params", spec_seed, prompt_id, trial)


def prompt_formatter(lm, name: str, prompt_format: str):
    """(format(text) -> str, add_special_tokens) for the spec's prompt_format and this model."""
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise SpecError(f"{name}: the tokenizer has no chat template (use plain or auto)", field="prompt_format")
    if prompt_format == "chat" or (prompt_format == "auto" and lm.entry.instruct and has_template):
        def chat(text: str) -> str:
            return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                    add_generation_prompt=True)
        return chat, False, "chat"
    return (lambda text: text), True, "plain"


def _controller(condition: str, spec: TRESweepSpec, name: str, lm, calibration, rows: int, random_uniforms):
    if condition == "baseline":
        return BaselineController(spec.baseline, rows)
    if condition == "random":
        return RandomController(spec.ranges, random_uniforms)
    return NeuralController(name, lm.anatomy, calibration, aggregate_how=spec.aggregate, ema_alpha=spec.ema_alpha,
                            mapping=spec.mapping, ranges=spec.ranges, rows=rows,
                            check_finite=spec.nan_policy == "error")


def run(spec: TRESweepSpec, ctx: RunContext) -> RunOutput:
    prompts = spec.selected_prompts()
    batch = spec.batch_size or len(prompts)
    starts = range(0, len(prompts), batch)
    records: list[dict] = []
    bar = ctx.progress(total=len(spec.models) * spec.trials * len(spec.conditions) * len(starts), desc="tre sweep",
                       unit="batch")
    for name in spec.models:
        bar.set_postfix_str(f"loading {name}")
        with ctx.phase(f"load.{name}"):
            lm = ctx.models.get(name, spec.dtype, spec.quantization)
        layer = lm.anatomy.layer_index(spec.layer_for(lm.anatomy.n_layers))
        if spec.point == "mlp_neurons":
            try:
                lm.anatomy.mlp_down_projection(layer)
            except AttributeError as exc:
                raise SpecError(f"{name}: {exc}; use mlp_output", field="point") from None
        fmt, add_special, used_format = prompt_formatter(lm, name, spec.prompt_format)
        texts = [fmt(p.text) for p in prompts]
        bar.set_postfix_str(f"calibrating {name}")
        with ctx.phase(f"calibration.{name}"):
            calibration = calibrate(lm, name, [fmt(t) for t in spec.calibration.texts] or texts,
                                    add_special_tokens=add_special, max_tokens=spec.calibration.max_tokens,
                                    layer=layer, point_kind=spec.point, top_k=spec.top_k_neurons,
                                    aggregate_how=spec.aggregate, batch_size=batch, nan_policy=spec.nan_policy)
        records.append({**calibration.as_record(), "display_name": lm.entry.display_name, "prompt_format": used_format})
        for trial in range(spec.trials):
            seeds = [generation_seed(spec.seed, p.id, trial) for p in prompts]
            uniforms = torch.stack([uniform_stream(s, (spec.max_new_tokens,)) for s in seeds])
            random_uniforms = torch.stack([uniform_stream(random_condition_seed(spec.seed, p.id, trial),
                                                          (spec.max_new_tokens, 3)) for p in prompts])
            for condition in spec.conditions:
                for start in starts:
                    rows = slice(start, start + batch)
                    bar.set_postfix_str(f"{name} trial {trial + 1}/{spec.trials} {condition}", refresh=False)
                    controller = _controller(condition, spec, name, lm, calibration, len(texts[rows]),
                                             random_uniforms[rows])
                    try:
                        with ctx.phase(f"generation.{name}.{condition}"):
                            generated = generate_rows(lm, name, texts[rows], controller, uniforms[rows],
                                                      max_new_tokens=spec.max_new_tokens, nan_policy=spec.nan_policy,
                                                      add_special_tokens=add_special, progress=bar)
                    except NonFiniteActivationError as exc:
                        raise NonFiniteActivationError(f"{exc} ({condition} condition, trial {trial})") from None
                    for prompt, seed, row in zip(prompts[rows], seeds[rows], generated):
                        records.append(_generation_record(lm, name, condition, trial, prompt, seed, row))
                    bar.update(1)
        ctx.models.release(name)
    bar.close()
    return RunOutput(records=records, curves=_curves(records))


def _generation_record(lm, name, condition, trial, prompt, seed, row) -> dict:
    record = {
        "record": "generation", "model": name, "display_name": lm.entry.display_name, "condition": condition,
        "prompt_id": prompt.id, "category": prompt.category, "trial": trial, "seed": seed, "prompt": prompt.text,
        "text": lm.tokenizer.decode(row.token_ids, skip_special_tokens=True), "n_tokens": len(row.token_ids),
        "stop_reason": row.stop_reason, "temperature": row.temperature, "top_p": row.top_p, "top_k": row.top_k,
        "nonfinite_logit_tokens": row.nonfinite_logit_tokens, "nonfinite_signal_tokens": row.nonfinite_signal_tokens,
    }
    if condition == "neural":
        record["signal_raw"] = row.signal_raw
        record["signal"] = row.signal
    return record


def _curves(records: list[dict]) -> list[dict]:
    """Mean parameter per token position, per model and varying condition (DVC plots; x = row index)."""
    columns: dict[str, list[list[float]]] = {}
    for r in records:
        if r["record"] != "generation" or r["condition"] == "baseline":
            continue
        for param in PARAMS + (("signal",) if r["condition"] == "neural" else ()):
            series = columns.setdefault(f"{r['model']}.{r['condition']}.{param}", [])
            for t, value in enumerate(r[param]):
                if len(series) <= t:
                    series.append([])
                if value is not None:
                    series[t].append(value)
    depth = max((len(s) for s in columns.values()), default=0)
    return [{"position": t, **{k: (round(float(np.mean(s[t])), 6) if t < len(s) and s[t] else "")
                               for k, s in columns.items()}} for t in range(depth)]
