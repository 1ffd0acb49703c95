"""Helpers for the tables an analysis builds (the types themselves are in harness/kinds/contract.py): rates as text,
seeds merged into one Analysis, the claims engine's findings as a table; Jinja2 templates render them."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.kinds.contract import Analysis, Column, Link, Table


def percent(value: float) -> str:
    """A rate in 0..1 as a percentage with one decimal, the way every page writes rates in prose."""
    return f"{100 * value:.1f}%"


def reported_text(value) -> str | None:
    """A reported value (number or text) as a table cell; None when the report gives none."""
    return None if value is None else f"{value:g}" if isinstance(value, float) else str(value)


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
