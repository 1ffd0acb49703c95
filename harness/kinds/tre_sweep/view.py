"""TRE sweep, the sample browser's rows: every generation, its condition, prompt and diversity."""

from __future__ import annotations

from harness.kinds.tre_sweep.analysis import scored_generations


def samples(spec, records: list[dict]) -> list[dict]:
    out = []
    for g in scored_generations(records):
        diversity = g.get("vocab_diversity")
        out.append({"item": g["prompt_id"], "seed": g.get("trial"), "method": f"{g['condition']} ({g['model']})",
                    "class": g.get("category", ""), "input": g.get("prompt", ""), "output": g["text"],
                    "answer": f"vocab diversity {diversity:.3f}" if diversity is not None else "no words",
                    "outcome": g.get("stop_reason") or "",
                    "note": f"{g.get('n_tokens', '?')} tokens"})
    return out
