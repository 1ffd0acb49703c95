"""Latent bridge, the figures: training curves and accuracy per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.kinds.bridge.analysis import METHOD_NAMES, first_expected, reported_points
from harness.kinds.contract import Analysis
from harness.report.figures import fit_y_axis, pyplot, save_figure
from registry.kinds.bridge import BridgeSpec


LOSSES = ("lm_loss", "flow_loss", "diversity_loss", "vq_loss")  # first, in this order; other losses follow
LOSS_NAMES = {"lm_loss": "LM loss (answer tokens)", "diversity_loss": "batch diversity loss", "vq_loss": "VQ loss",
              "flow_loss": "flow loss (velocity MSE)"}
DIAGNOSTICS = ("scale", "z_variance", "vq_perplexity", "code_diversity", "tanh_saturation")


def figures(spec: BridgeSpec, analysis: Analysis, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    bridge_rows = [r for r in curves if r.get("run") == "bridge"]
    if bridge_rows:
        diagnostics = [c for c in DIAGNOSTICS if any(c in r for r in bridge_rows)]
        fig, axes = plt.subplots(1, 3 if diagnostics else 2, figsize=(15 if diagnostics else 10, 3.8))
        ax1, ax2 = axes[0], axes[1]
        seeds = list(dict.fromkeys(r.get("seed") for r in bridge_rows))
        losses = [c for c in LOSSES if any(c in r for r in bridge_rows)]
        losses += sorted({c for r in bridge_rows for c in r if c.endswith("_loss") and c not in (*LOSSES, "total_loss")})
        for k, seed in enumerate(seeds):  # a colour per curve, a line style per seed
            rows = [r for r in bridge_rows if r.get("seed") == seed]
            suffix = f" (seed {seed:g})" if len(seeds) > 1 else ""
            style = ("-", "--", ":", "-.")[k % 4]
            steps = [r["step"] for r in rows]
            for n, column in enumerate(losses):
                ax1.plot(steps, [r.get(column, np.nan) for r in rows], label=f"{LOSS_NAMES.get(column, column)}{suffix}",
                         lw=1, color=f"C{n}", ls=style)
            quick = [(r["step"], r["quick_eval_accuracy"]) for r in rows if "quick_eval_accuracy" in r]
            if quick:
                ax2.plot(*zip(*quick), marker="o", label=f"seed {seed:g}" if suffix else None)
            for n, column in enumerate(diagnostics):
                axes[2].plot(steps, [r.get(column, np.nan) for r in rows], label=f"{column}{suffix}", lw=1,
                             color=f"C{n}", ls=style)
        # The report's trajectory in full, also past the local run's last step (local runs train fewer steps):
        # a dotted line marks where the local curve ends.
        reported = first_expected(spec)
        initial = reported.get("training.bridge.initial_lm_loss")
        last_step, beyond = steps[-1], False
        loss_values = [r.get(c) for r in bridge_rows for c in losses]
        diagnostic_values = [r.get(c) for r in bridge_rows for c in diagnostics]
        reported_losses, reported_diagnostics = [], []  # always inside the axes
        for n, column in enumerate(losses):
            points = list(reported_points(reported, "bridge", column))
            if column == "lm_loss" and isinstance(initial, float):
                points.insert(0, (1, initial))
            if points:
                reported_losses += [v for _, v in points]
                ax1.plot(*zip(*points), "x", color=f"C{n}", ms=8,
                         label=f"reported {LOSS_NAMES.get(column, column)} (paper profile)")
                beyond |= max(s for s, _ in points) > last_step
        for n, column in enumerate(diagnostics):
            points = list(reported_points(reported, "bridge", column))
            if points:
                reported_diagnostics += [v for _, v in points]
                axes[2].plot(*zip(*points), "x", color=f"C{n}", ms=8, label=f"reported {column}")
                beyond |= max(s for s, _ in points) > last_step
        points = list(reported_points(reported, "bridge", "quick_eval_accuracy"))
        if points:
            ax2.plot(*zip(*points), "x", color="k", ms=8, label="reported (paper profile)")
            ax2.legend(fontsize=7)
            beyond |= max(s for s, _ in points) > last_step
        if beyond:
            for ax in axes:
                ax.axvline(last_step, color="grey", ls=":", lw=1, label="local run's last step" if ax is ax1 else None)
        ax1.set_xlabel("step")
        clipped = fit_y_axis(ax1, loss_values, keep=reported_losses)
        ax1.legend(fontsize=7)
        ax1.set_title("Bridge training losses" + (f" ({clipped})" if clipped else ""))
        if len(seeds) > 1:
            ax2.legend(fontsize=7)
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("step")
        ax2.set_ylabel("accuracy")
        ax2.set_title(f"Quick evaluation ({spec.training.quick_eval_items} items)")
        if not any("quick_eval_accuracy" in r for r in bridge_rows):
            ax2.text(0.5, 0.5, "no quick evaluation in this run", ha="center", va="center", color="grey",
                     transform=ax2.transAxes)
        if diagnostics:
            clipped = fit_y_axis(axes[2], diagnostic_values, log_above=10, keep=reported_diagnostics)
            axes[2].set_xlabel("step")
            axes[2].legend(fontsize=7)
            axes[2].set_title("Output scale, variance, code usage" + (f" ({clipped})" if clipped else ""))
        paths.append(save_figure(fig, out_dir / "training.png", dpi=120))

    methods = [m for m in spec.evaluation.methods if f"{m}.generation.accuracy" in analysis.metrics]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(methods))
    for offset, scoring in ((-0.2, "generation"), (0.2, "scored")):
        acc = [analysis.metrics.get(f"{m}.{scoring}.accuracy", np.nan) for m in methods]
        low = [analysis.metrics.get(f"{m}.{scoring}.ci_low", np.nan) for m in methods]
        high = [analysis.metrics.get(f"{m}.{scoring}.ci_high", np.nan) for m in methods]
        err = np.array([np.subtract(acc, low), np.subtract(high, acc)])
        ax.bar(x + offset, acc, width=0.4, yerr=err, capsize=3, label=scoring)
    ax.set_xticks(x, [METHOD_NAMES[m] for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"{spec.name}: accuracy with 95% Wilson intervals")
    paths.append(save_figure(fig, out_dir / "accuracy.png", dpi=120))
    return paths
