"""Residual-stream gain (seed 001), the run: per-layer norms, W_U spectral norm and next-token entropy.

`run` stores raw per-layer norms for every (model, prompt); every derived number (gains,
cumulative energy, early explosion, effective amplification, the H18 correlation, the
base-vs-instruct comparison) is computed by `analysis.analyze` from those records, so a saved
run can be re-analysed. Definitions are in registry/kinds/residual_gain.py.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from harness.context import RunContext
from harness.kinds.contract import RunOutput
from harness.models import ActivationCapture, check_finite
from registry.kinds.residual_gain import ResidualGainSpec


def spectral_norm(weight: torch.Tensor, chunk: int = 16384) -> float:
    """sigma_max of a (vocab x d) matrix via the d x d Gram matrix in float64 (cheap for tall W)."""
    gram = torch.zeros(weight.shape[1], weight.shape[1], dtype=torch.float64, device=weight.device)
    for block in weight.detach().split(chunk, dim=0):
        block = block.to(torch.float64)
        gram += block.T @ block
    return float(torch.linalg.eigvalsh(gram)[-1].clamp_min(0).sqrt())


def entropy_nats(logits: torch.Tensor) -> float:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum())


def _content_positions(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Positions that are not special tokens (BOS carries outsized norms in many models)."""
    special = torch.tensor([tid in set(tokenizer.all_special_ids) for tid in input_ids.tolist()])
    positions = (~special).nonzero().flatten()
    return positions if positions.numel() else torch.arange(input_ids.numel())


def run(spec: ResidualGainSpec, ctx: RunContext) -> RunOutput:
    records = []
    bar = ctx.progress(total=len(spec.models) * len(spec.prompts), desc="residual gain", unit="prompt")
    for name in spec.models:
        bar.set_postfix_str(f"loading {name}")
        with ctx.phase(f"load.{name}"):
            lm = ctx.models.get(name, spec.dtype)
        with ctx.phase(f"measure.{name}"):
            facts = lm.facts
            sigma = spectral_norm(lm.anatomy.lm_head.weight)
            bar.set_postfix_str(name)
            for prompt in spec.prompts:
                enc = lm.tokenizer(prompt.text, return_tensors="pt", add_special_tokens=spec.add_special_tokens).to(lm.device)
                with torch.no_grad(), ActivationCapture(name, lm.anatomy, residual=True, final_norm=True) as cap:
                    logits = lm.model(**enc).logits[0, -1]
                check_finite(logits, name, "logits")
                positions = _content_positions(enc["input_ids"][0].cpu(), lm.tokenizer)
                stream = [t[0].float().cpu() for t in cap.residual_stream()]
                post = cap.get("final_norm.out")[0].float().cpu()
                top = int(logits.argmax())
                records.append({
                    "model": name,
                    "display_name": lm.entry.display_name,
                    "prompt_id": prompt.id,
                    "prompt": prompt.text,
                    "category": prompt.category,
                    "n_tokens": int(enc["input_ids"].shape[1]),
                    "norms_last": [float(t[-1].norm()) for t in stream],
                    "norms_tokmean": [float(t[positions].norm(dim=-1).mean()) for t in stream],
                    "final_norm_out_last": float(post[-1].norm()),
                    "final_norm_out_tokmean": float(post[positions].norm(dim=-1).mean()),
                    "next_token_entropy": entropy_nats(logits),
                    "top_next_token": lm.tokenizer.decode([top]),
                    "wu_sigma_max": sigma,
                    **{f"arch_{k}": v for k, v in facts.items()},
                })
                bar.update(1)
        ctx.models.release(name)
    bar.close()
    return RunOutput(records=records, curves=_curves(spec, records))


def _curves(spec: ResidualGainSpec, records: list[dict]) -> list[dict]:
    """Wide table for DVC plots: layer, then one column per model (mean last-token norm)."""
    by_model = _mean_norms(records)
    depth = max(len(v) for v in by_model.values())
    return [{"layer": i, **{m: (round(v[i], 6) if i < len(v) else "") for m, v in by_model.items()}} for i in range(depth)]


def _mean_norms(records: list[dict], key: str = "norms_last") -> dict[str, list[float]]:
    grouped = defaultdict(list)
    for r in records:
        grouped[r["model"]].append(r[key])
    return {m: list(np.mean(np.array(v), axis=0)) for m, v in grouped.items()}
