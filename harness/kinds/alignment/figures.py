"""Alignment, the figures: log perplexity ratio by depth per direction and map, and held-out centred cosine
(raw cosine mostly measures the target's mean, which Procrustes adds) by depth."""

from __future__ import annotations

from pathlib import Path

from harness.kinds.alignment.analysis import depth_key, direction_key
from harness.kinds.contract import Analysis
from harness.report.figures import pyplot, save_figure
from registry.kinds.alignment import AlignmentSpec


def figures(spec: AlignmentSpec, analysis: Analysis, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    if not records:
        return []
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    m = analysis.metrics
    for src, tgt in spec.directions():
        for map_name in spec.maps:
            keys = [f"{direction_key(src, tgt)}.{map_name}.{depth_key(f)}" for f in spec.layers]
            label = f"{src} -> {tgt}, {map_name}"
            ax1.plot(spec.layers, [m.get(f"{k}.log_ppl_ratio", float("nan")) for k in keys], marker="o", label=label)
            ax2.plot(spec.layers, [m.get(f"{k}.centred_cosine", float("nan")) for k in keys], marker="o", label=label)
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set(xlabel="depth fraction", ylabel="log perplexity ratio to own continuation", title="Injected generations")
    ax2.set(xlabel="depth fraction", ylabel="held-out centred cosine (mapped vs target)",
            title="Alignment of states (deviations from the target mean)")
    ax1.legend(fontsize=7)
    path = out_dir / f"{spec.name}_injection.png"
    save_figure(fig, path)
    return [path]
