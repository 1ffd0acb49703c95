"""Latent bridge, the sample browser's rows: every evaluation item under every method and training seed."""

from __future__ import annotations

from harness.kinds.bridge.analysis import METHOD_NAMES, SELECTION_SET
from harness.kinds.bridge.answers import judge
from registry.kinds.bridge import CONTINUATION_SET


def samples(spec, records: list[dict]) -> list[dict]:
    labels = spec.task.label_names()
    out = []
    for r in records:
        if r.get("set") == CONTINUATION_SET:
            continue
        if r.get("set") == SELECTION_SET:
            setting = r["setting"]
            methods = {f"{setting['method']} " + ", ".join(f"{k} {v}" for k, v in setting.items() if k != "method"):
                       r["result"]}
        else:
            methods = {METHOD_NAMES.get(m, m): r[m] for m in METHOD_NAMES if isinstance(r.get(m), dict)}
        for name, result in methods.items():
            prediction = result.get("generation")
            outcome = ("invalid" if prediction is None else
                       "correct" if judge(spec.task.task_type, r, prediction) else "incorrect")
            shown = labels[prediction] if isinstance(prediction, int) and prediction < len(labels) else prediction
            out.append({"item": r["id"], "seed": r.get("seed"), "method": name,
                        "class": labels[r["label"]] if r.get("label") is not None and labels else r.get("answer"),
                        "input": r.get("input", ""), "output": result.get("generated", result.get("summary", "")),
                        "answer": "" if shown is None else str(shown), "outcome": outcome,
                        "note": f"relay summary: {result['summary']}" if "summary" in result else ""})
    return out
