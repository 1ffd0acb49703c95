"""Half-life, the figures: pressure and routing-entropy trajectories for both arms (mean over
trajectories with the min-max band), cliffs of the mean marked; the pretraining loss when there is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.kinds.contract import Analysis
from harness.kinds.halflife import trajectory as T
from harness.kinds.halflife.analysis import series_by_trajectory
from harness.report.figures import pyplot, save_figure
from registry.kinds.halflife import HalfLifeSpec

COLORS = {"baseline": "tab:blue", "perturbed": "tab:orange"}


def figures(spec: HalfLifeSpec, analysis: Analysis, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if records:
        series = series_by_trajectory(spec, records)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for arm in spec.arms():
            for ax, key in ((ax1, spec.pressure.aggregate), (ax2, "entropy")):
                rows = np.array([s[key] for k, s in series.items() if k[3] == arm])
                chunks = np.arange(rows.shape[1])
                mean = rows.mean(0)
                ax.plot(chunks, mean, color=COLORS[arm], label=f"{arm} (mean of {len(rows)})", lw=1.2)
                if len(rows) > 1:
                    ax.fill_between(chunks, rows.min(0), rows.max(0), color=COLORS[arm], alpha=0.15, lw=0)
                if key != "entropy":
                    marks = T.cliffs(list(mean), spec.analysis.cliff_drop, spec.analysis.cliff_z)
                    ax.scatter(marks, mean[marks], color=COLORS[arm], marker="v", s=30, zorder=3,
                               label=f"{arm} cliffs" if marks else None)
        ax1.set_title(f"Pressure ({spec.pressure.name}, {spec.pressure.aggregate.replace('_', ' ')})")
        ax2.set_title("Routing entropy (H / ln E, all MoE layers)")
        for ax in (ax1, ax2):
            ax.set_xlabel("chunk")
            ax.legend(fontsize=7)
        paths.append(save_figure(fig, out_dir / "trajectories.png"))
    pre = [r for r in curves if r.get("run") == "pretrain"]
    if pre:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for seed in dict.fromkeys(r.get("train_seed") for r in pre):
            rows = [r for r in pre if r.get("train_seed") == seed]
            ax.plot([r["step"] for r in rows], [r["total_loss"] for r in rows], lw=1,
                    label=None if seed is None else f"training seed {seed:g}")
        if len({r.get("train_seed") for r in pre}) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel("LM + router balance loss")
        ax.set_title("Pretraining the stand-in (learned routing)")
        paths.append(save_figure(fig, out_dir / "pretraining.png"))
    return paths
