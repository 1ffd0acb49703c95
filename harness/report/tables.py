"""A table as data: experiments build them, Jinja2 templates render them (Markdown, LaTeX)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MISSING = "—"


@dataclass(frozen=True)
class Link:
    """A cell that links to another page (Markdown shows a link; LaTeX the text)."""

    text: str
    target: str

    def __str__(self) -> str:
        return self.text


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
    if isinstance(value, Link):
        return value
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
    # name -> training seed -> unit id -> outcome (1/0, or a value per item): what claims and cross-spec pages pair by
    # unit over every seed (a deterministic method has one seed key); not written to metrics.json
    outcomes: dict[str, dict] = field(default_factory=dict)
    # the claims engine's findings on the report's claims about this run (harness/claims.py)
    findings: list = field(default_factory=list)
    # training seed -> that seed's metrics, for cross-spec claims decided per seed; not written to metrics.json
    seed_metrics: dict = field(default_factory=dict)
    # curve name -> (step, value) points a cross-spec figure draws; not written to metrics.json
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def set(self, key: str, value: float | None) -> None:
        """Record a metric; undefined values (None, NaN, Inf) are left out of metrics.json."""
        if value is not None and math.isfinite(float(value)):
            self.metrics[key] = float(value)


def merge_seeds(per_seed: dict, rebuilt: tuple[str, ...] = ()) -> Analysis:
    """One Analysis from one per training seed (each computed as if its seed were the only one). A metric or fact
    every seed agrees on is kept as it is; where seeds differ, the metric is the mean over seeds (the all-seed
    headline) and each seed's value is kept as `<metric>.seed_<s>`, and a fact lists each seed's. A table every seed
    renders the same is kept once; otherwise one table with a Seed column holds every seed's rows. Tables whose key
    is in `rebuilt` are left out (the caller builds them over all seeds)."""
    seeds = list(per_seed)
    out = Analysis()
    keys = list(dict.fromkeys(k for a in per_seed.values() for k in a.metrics))
    for key in keys:
        values = {s: a.metrics[key] for s, a in per_seed.items() if key in a.metrics}
        if len(set(values.values())) == 1 and len(values) == len(seeds):
            out.metrics[key] = next(iter(values.values()))
            continue
        out.set(key, float(sum(values.values()) / len(values)))
        for seed, value in values.items():
            out.set(f"{key}.seed_{seed}", value)
    for key in dict.fromkeys(k for a in per_seed.values() for k in a.facts):
        values = {s: a.facts[key] for s, a in per_seed.items() if key in a.facts}
        out.facts[key] = next(iter(values.values())) if len(set(values.values())) == 1 and len(values) == len(seeds) \
            else "; ".join(f"seed {s}: {v}" for s, v in values.items())
    first = per_seed[seeds[0]]
    for table in first.tables:
        if table.key in rebuilt:
            continue
        versions = {s: next((t for t in a.tables if t.key == table.key), None) for s, a in per_seed.items()}
        if all(v is not None and v.formatted_rows() == table.formatted_rows() for v in versions.values()):
            out.tables.append(table)
            continue
        merged = Table(table.key, f"{table.title}, per training seed", [Column("Seed", align="l"), *table.columns],
                       caption=table.caption)
        for seed, version in versions.items():
            for row in (version.rows if version is not None else []):
                merged.add(seed, *row)
        out.tables.append(merged)
    out.notes = list(dict.fromkeys(n for a in per_seed.values() for n in a.notes))
    out.series = first.series
    out.seed_metrics = {s: a.metrics for s, a in per_seed.items()}
    return out


@dataclass
class FindingsTable(Table):
    """The claims engine's findings as a table; the report collects every one into reports/findings.md."""

    findings: list = field(default_factory=list)


def findings_table(findings: list, title: str = "The report's claims against this run", key: str = "findings",
                   subject: bool = False, link_prefix: str = "") -> FindingsTable:
    """One row per finding (harness/claims.py decided every verdict): the claim and where the report makes it, the
    report's numbers, this run over all seeds, per seed, power, the verdict (linked to its rule) and the same rule
    on the report's own numbers."""
    from harness.claims import ANCHORS, RULES_PAGE

    columns = [Column("Claim (§)", align="l"), *([Column("Tested on", align="l")] if subject else []),
               Column("Report's numbers", align="l"), Column("This run, all seeds", align="l"),
               Column("Per seed", align="l"), Column("Power", align="l"), Column("Verdict", align="l"),
               Column("The rule on the report's own numbers", align="l")]
    table = FindingsTable(key, title, columns, caption=(
        "Every verdict comes from the claims engine's one rule set (linked: " + RULES_PAGE + "), decided over every "
        "training seed; thresholds and margins marked this project's were chosen here, not by the report."),
        findings=list(findings))
    for f in findings:
        if not f.from_engine:  # a verdict is only ever the engine's; a kind that builds a Finding itself is a bug
            raise ValueError(f"finding {f.claim!r} was not decided by the claims engine (harness/claims.py decide)")
        verdict = Link(f.verdict, f"{link_prefix}{RULES_PAGE}#{ANCHORS[f.verdict]}")
        own = f.self_check + (f": {f.self_detail}" if f.self_detail else "")
        table.add(f"{f.statement} (§{f.section})" + (f"; {f.note}" if f.note else ""),
                  *([f.subject] if subject else []), f.reported or None, f.statistic, f.seeds or None, f.power or None,
                  verdict, own)
    return table
