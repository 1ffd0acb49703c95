"""TRE sweep figures: one neural generation's per-token traces, vocab diversity by condition, category deltas."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.kinds.contract import Analysis
from harness.kinds.tre_sweep.analysis import metric_values, scored_generations
from harness.report.figures import pyplot, save_figure
from registry.kinds.tre_sweep import SAMPLING_PARAMS as PARAMS, TRESweepSpec


def figures(spec: TRESweepSpec, analysis: Analysis, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    gens = scored_generations(records)
    models = list(dict.fromkeys(g["model"] for g in gens))
    names = {g["model"]: g["display_name"] for g in gens}
    paths = []

    traces = [next((g for g in gens if g["model"] == m and g["condition"] == "neural" and len(g["temperature"]) > 1),
                   None) for m in models]
    traces = [g for g in traces if g is not None]
    if traces:
        fig, axes = plt.subplots(4, len(traces), figsize=(4.6 * len(traces) + 1.5, 8), sharex="col", squeeze=False)
        for col, g in enumerate(traces):
            steps = np.arange(len(g["temperature"]))
            signal = np.array([np.nan if v is None else v for v in g["signal"]])
            raw = np.array([np.nan if v is None else v for v in g["signal_raw"]])
            axes[0, col].plot(steps, raw, ".", ms=3, color="grey", label="per token")
            axes[0, col].plot(steps, signal, color="black", lw=1.2, label=f"EMA (α = {spec.ema_alpha:g})")
            axes[0, col].axhline(0, color="grey", lw=0.6, ls=":")
            axes[0, col].legend(fontsize=7, loc="upper right")
            axes[0, col].set_title(f"{names[g['model']]}\n{g['prompt_id']}, trial {g['trial']}", fontsize=9)
            for row, param in enumerate(PARAMS, start=1):
                ax = axes[row, col]
                allowed = getattr(spec.ranges, param)
                ax.plot(steps, g[param], color=f"C{row - 1}", lw=1.2, drawstyle="steps-mid")
                ax.axhline(allowed.lo, color="grey", lw=0.7, ls="--")
                ax.axhline(allowed.hi, color="grey", lw=0.7, ls="--")
                ax.axhline(getattr(spec.baseline, param), color="red", lw=0.8, ls=":", label="baseline")
                if col == 0:
                    ax.set_ylabel(param)
            axes[-1, col].set_xlabel("generated token")
        axes[0, 0].set_ylabel("signal (calibration z)")
        axes[1, 0].legend(fontsize=7, loc="upper right")
        fig.suptitle("Neural condition, per token: the signal and the parameters it chose\n(dashed: allowed range)",
                     fontsize=10)
        paths.append(save_figure(fig, out_dir / "param_traces.png"))

    conditions = [c for c in spec.conditions if any(g["condition"] == c for g in gens)]
    if any(g["vocab_diversity"] is not None for g in gens):
        fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1.5, 4), squeeze=False)
        for col, m in enumerate(models):
            data = [metric_values([g for g in gens if g["model"] == m and g["condition"] == c], "vocab_diversity") or [np.nan]
                    for c in conditions]
            ax = axes[0, col]
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(conditions) + 1), conditions)
            ax.set_title(names[m], fontsize=9)
            if col == 0:
                ax.set_ylabel("vocab diversity (per generation)")
        fig.suptitle("Vocab diversity by condition (triangle: mean)")
        paths.append(save_figure(fig, out_dir / "vocab_diversity_by_condition.png"))

    if {"neural", "baseline"} <= set(conditions) and any(g["vocab_diversity"] is not None for g in gens):
        fig, ax = plt.subplots(figsize=(7.5, 4))
        width = 0.8 / max(1, len(models))
        for i, m in enumerate(models):
            deltas = []
            for category in spec.categories:
                n = metric_values([g for g in gens if g["model"] == m and g["condition"] == "neural"
                             and g["category"] == category], "vocab_diversity")
                b = metric_values([g for g in gens if g["model"] == m and g["condition"] == "baseline"
                             and g["category"] == category], "vocab_diversity")
                deltas.append(np.mean(n) - np.mean(b) if n and b else np.nan)
            ax.bar(np.arange(len(spec.categories)) + i * width, deltas, width, label=names[m])
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xticks(np.arange(len(spec.categories)) + width * (len(models) - 1) / 2,
                      [c.replace("_", "-") for c in spec.categories], rotation=30, ha="right")
        ax.set_ylabel("Δ vocab diversity (neural − baseline)")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / "category_deltas.png"))
    return paths
