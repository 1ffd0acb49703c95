"""Residual gain, the sample browser's rows: every (model, prompt) with its last-layer gain and entropy."""

from __future__ import annotations

from harness.kinds.residual_gain.analysis import derive


def samples(spec, records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        d = derive(r, spec.early_layers_fraction)
        out.append({"item": r["prompt_id"], "seed": None, "method": r.get("display_name", r["model"]),
                    "class": r.get("category", ""), "input": r.get("prompt", ""), "output": "",
                    "answer": f"last gain {d['last_gain_pre_norm']:.3f}, entropy {r['next_token_entropy']:.2f} nats",
                    "outcome": "expands" if d["last_gain_pre_norm"] > 1 else "contracts",
                    "note": f"cumulative energy {d['cumulative_energy']:,.1f}"})
    return out
