"""Residual-stream gain, the figures: norm per layer and gain vs entropy."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.kinds.contract import Analysis
from harness.kinds.residual_gain.analysis import derive
from harness.report.figures import pyplot, save_figure
from registry.kinds.residual_gain import ResidualGainSpec


def figures(spec: ResidualGainSpec, analysis: Analysis, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {r["model"]: r["display_name"] for r in records}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grouped = defaultdict(list)
    for r in records:
        grouped[r["model"]].append(r["norms_last"])
    for model, norms in grouped.items():
        arr = np.array(norms)
        layers = np.arange(arr.shape[1])
        ax.plot(layers, np.median(arr, axis=0), marker=".", label=names[model])
        if arr.shape[0] > 1:
            ax.fill_between(layers, arr.min(axis=0), arr.max(axis=0), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("layer (0 = embedding, i = output of block i-1)")
    ax.set_ylabel("‖h‖ of the last token (log)")
    ax.set_title("Residual-stream norm per layer (median over prompts; band = min–max)")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "norms_per_layer.png"))

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model in grouped:
        rows = [r for r in records if r["model"] == model]
        x = [r["next_token_entropy"] for r in rows]
        y = [derive(r, spec.early_layers_fraction)["last_gain_pre_norm"] for r in rows]
        ax.scatter(x, y, label=names[model], s=18)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("next-token entropy (nats)")
    ax.set_ylabel("last-layer gain (pre-norm)")
    ax.set_title("H18: last-layer gain vs uncertainty, one point per prompt")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "gain_vs_entropy.png"))
    return paths
