"""Alignment, across specs: one row per direction, depth and method (no map, Procrustes, each adapter at
its best epoch), from every alignment spec that has run."""

from __future__ import annotations

from pathlib import Path

from harness.kinds.alignment.analysis import depth_key, direction_key
from harness.kinds.contract import Column, Table


def summary(entries, figure_dir: Path) -> tuple[list[Table], list[str], list[Path]]:
    table = Table("methods", "Layer x direction x method: held-out alignment of states and the injected generations "
                  "(log perplexity ratio to the target's own continuations; 0 = as plausible as its own text)",
                  [Column("spec", align="l"), Column("profile", align="l"), Column("direction", align="l"),
                   Column("depth", ".2f"), Column("method", align="l"), Column("CKA", ".3f"), Column("cosine", ".3f"),
                   Column("centred cosine", ".3f"), Column("rel. MSE", ".3f"), Column("R²", ".3f"),
                   Column("log ppl ratio", ".2f"), Column("level (mode)", align="l")])
    for e in entries:
        if e.analysis is None:
            continue
        spec, m, facts = e.spec, e.analysis.metrics, e.analysis.facts
        profile = (e.run or {}).get("profile", "")
        for src, tgt in spec.directions():
            direction = direction_key(src, tgt)
            for fraction in spec.layers:
                for map_name in spec.maps:
                    key = f"{direction}.{map_name}.{depth_key(fraction)}"
                    if f"{key}.log_ppl_ratio" not in m:
                        continue
                    table.add(spec.name, profile, f"{src} -> {tgt}", fraction, map_name, m.get(f"{key}.cka_after"),
                              m.get(f"{key}.cosine"), m.get(f"{key}.centred_cosine"), m.get(f"{key}.relative_mse"),
                              m.get(f"{key}.r2"), m.get(f"{key}.log_ppl_ratio"), facts.get(f"{key}.level"))
            for i, adapter in enumerate(spec.adapters):
                for fraction in adapter.layers:
                    key = f"adapter{i}.{direction}.{depth_key(fraction)}"
                    if f"{key}.cka" not in m:
                        continue
                    layers = "" if len(adapter.layers) == 1 else f", multi-layer {adapter.layers}"
                    table.add(spec.name, profile, f"{src} -> {tgt}", fraction, f"adapter{i}: {adapter.type}{layers}",
                              m.get(f"{key}.cka"), m.get(f"{key}.cosine"), None, m.get(f"{key}.relative_mse"), None,
                              m.get(f"{key}.log_ppl_ratio"), None)
    notes = ["CKA is invariant to orthogonal maps: no map (where square) and Procrustes share it; adapters can change it. "
             "Adapter rows have raw cosine and relative MSE only (the per-epoch log keeps those). "
             "Adapter rows are at the epoch with the lowest validation loss; their generations have no level because "
             "only the first prompt's text is kept per epoch."]
    return [table], notes, []
