"""Half-life, the sample browser's rows: every trajectory (prompt, seed, arm) with its generated text and how its
routing pressure moved."""

from __future__ import annotations

from harness.kinds.halflife.analysis import series_by_trajectory, trajectory_stats


def samples(spec, records: list[dict]) -> list[dict]:
    series = series_by_trajectory(spec, records)
    pieces: dict = {}
    for r in records:
        pieces.setdefault((r.get("train_seed"), r["prompt"], r["seed"], r["arm"]), []).append(r.get("piece", ""))
    out = []
    for key, s in series.items():
        train_seed, prompt, seed, arm = key
        st = trajectory_stats(spec, s)
        half = f"half-life at chunk {st['half_life']}" if st["half_life"] is not None else "half-life not reached"
        out.append({"item": f"{prompt}/{seed}", "seed": train_seed, "method": arm, "class": prompt, "input": "",
                    "output": "".join(pieces.get(key, []))[:600],
                    "answer": f"pressure {st['p_first']:.3f} -> {st['p_last']:.3f}; {half}",
                    "outcome": "reached" if st["half_life"] is not None else "not reached",
                    "note": f"slope {st['slope']:+.2e} per chunk; entropy collapse {st['collapse']:+.1%}"})
    return out
