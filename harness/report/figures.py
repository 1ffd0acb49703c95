"""matplotlib set up for files (no display), and one way to finish and save a figure."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    """Tight layout, write the PNG, free the figure; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def fit_y_axis(ax, values, log_above: float = 100.0, clip_percent: float = 1.0, keep=()) -> str:
    """Limits that show the bulk of the data: a log axis where positive values span more than `log_above`
    (between their 1st and 99th percentiles), else a linear axis over the `clip_percent`..(100 - clip_percent)
    percentiles with a margin, so one spike does not flatten every line. Returns a note for the title
    ("" or "spikes clipped") so a clipped axis says so. Values in `keep` (a report's few points) always show."""
    import numpy as np

    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if array.size == 0:
        return ""
    low, high = np.percentile(array, [clip_percent, 100 - clip_percent])
    kept = [v for v in keep if v is not None and np.isfinite(v)]
    low, high = min([low, *kept]), max([high, *kept])
    if array.min() > 0 and low > 0 and high / max(low, 1e-300) > log_above:
        ax.set_yscale("log")
        low, high = low / 1.5, high * 1.5
    else:
        pad = 0.08 * (high - low) or 0.05 * max(abs(high), 1.0)
        low, high = low - pad, high + pad
    ax.set_ylim(low, high)
    return "spikes clipped" if (array < low).any() or (array > high).any() else ""
