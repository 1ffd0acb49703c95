"""A table as data: experiments build them, Jinja2 templates render them (Markdown, LaTeX)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MISSING = "—"


@dataclass
class Column:
    header: str
    fmt: str = ""  # a format spec such as ".3f", ".1%", ",.0f"; strings pass through
    align: str = "r"


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str = ""

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.key}: row has {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def formatted_rows(self) -> list[list[str]]:
        return [[format_cell(cell, col.fmt) for cell, col in zip(row, self.columns)] for row in self.rows]


def format_cell(value: Any, fmt: str = "") -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, (int, float)) and fmt:
        return format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def percent(value: float) -> str:
    """A rate in 0..1 as a percentage with one decimal, the way every page writes rates in prose."""
    return f"{100 * value:.1f}%"


def reported_text(value) -> str | None:
    """A reported value (number or text) as a table cell; None when the report gives none."""
    return None if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class Analysis:
    """What an experiment's records say: flat metrics, text facts, tables and notes."""

    metrics: dict[str, float] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # item id -> outcome, per method: what a cross-spec page pairs by item (McNemar); not written to metrics.json
    per_item: dict[str, dict[str, bool]] = field(default_factory=dict)
    # curve name -> (step, value) points a cross-spec figure draws; not written to metrics.json
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def set(self, key: str, value: float | None) -> None:
        """Record a metric; undefined values (None, NaN, Inf) are left out of metrics.json."""
        if value is not None and math.isfinite(float(value)):
            self.metrics[key] = float(value)
