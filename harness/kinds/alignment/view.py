"""Alignment, the sample browser's rows: every generation (baselines and injections) with its quality level."""

from __future__ import annotations

from harness.kinds.alignment.analysis import level
from harness.kinds.alignment.reference import reference_nll


def samples(spec, records: list[dict]) -> list[dict]:
    reference = reference_nll(records)
    out = []
    for r in records:
        if r.get("record") != "generation":
            continue
        where = "native" if r["condition"] == "baseline" else f"{r['map']}, depth {r['layer_fraction']:g}"
        graded = level(spec, r, reference[r["target"]]) if r["target"] in reference else "—"
        out.append({"item": str(r["prompt_index"]), "seed": None, "method": where,
                    "class": f"{r['source']} -> {r['target']}", "input": r["prompt"], "output": r["text"],
                    "answer": graded, "outcome": graded,
                    "note": f"repetition {r['repetition']:.2f}" + (f", NLL {r['nll']:.2f}" if r["nll"] is not None else "")})
    return out
