"""From a sampling parameter's value back to the unit signal that sets it: the analysis places the report's
settings on the controller's scale. Apart from `signal.py` because that module needs torch and the analysis does not."""

from __future__ import annotations


def unit_for_value(value: float, lo: float, hi: float, direction: str, centre: float | None = None) -> float:
    """The u that `signal._place` maps to `value` (the inverse of its map on [lo, hi])."""
    if centre is None:
        v = (value - lo) / (hi - lo)
    elif value <= centre:
        v = 0.5 * (value - lo) / (centre - lo) if centre > lo else 0.5
    else:
        v = 0.5 + 0.5 * (value - centre) / (hi - centre)
    return v if direction == "up" else 1 - v
