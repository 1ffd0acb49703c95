"""The contract between the core and a kind: the one object a kind exports, the Protocols its modules fulfil, and
the data types they exchange with the core (run output, analysis and its tables, the workload a plan sizes).

This module is the ground floor: it imports nothing else of the project at run time, so the core, the loader in
harness/kinds/__init__.py and every kind can import it without a loop. A kind's package declares itself in its
`__init__.py` as

    KIND = Kind(spec_model=MySpec, executor="executor", analysis="analysis", figures="figures", ...)

naming its modules rather than importing them: a run stage imports only the executor and the parts its spec
declares, an analysis stage only the analysis and figures, so each DVC stage depends on the code it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from harness.context import RunContext


# ---- tables and analysis: what an analysis returns and the report renders ----

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


# ---- what a run returns, and the workload a plan sizes ----

@dataclass
class RunOutput:
    records: list[dict]
    curves: list[dict] = field(default_factory=list)  # rows of curves.csv (DVC plots)


@dataclass
class Forward:
    """One kind of forward pass a run makes: which model, how many rows of how many positions."""

    what: str  # e.g. "training", "evaluation", "sender states"
    model: str
    batch: int
    sequence: int  # positions per row, prompt and generated tokens together
    trains: bool = False  # a backward pass goes through this (frozen) model: its activations are kept


@dataclass
class Workload:
    """What a run loads and the forwards it makes; the plan's peak is the weights of the models
    loaded together plus the largest forward, plus optimizer state for what is trained."""

    models: list[str]
    forwards: list[Forward]
    tokens: int  # token positions processed over the whole run, all models together
    trainable_parameters: int = 0  # updated parameters (optimizer state: fp32 weights, grads, 2 moments)
    one_at_a_time: bool = False  # models are loaded in turn (the peak is the largest), not together
    notes: list[str] = field(default_factory=list)


# ---- the modules a kind names ----

@runtime_checkable
class Executor(Protocol):
    def run(self, spec: Any, ctx: RunContext) -> RunOutput: ...


@runtime_checkable
class Analyzer(Protocol):
    def analyze(self, spec: Any, records: list[dict], curves: list[dict] | None = None) -> Analysis: ...

    def headline_metrics(self, spec: Any) -> list[str]: ...


@runtime_checkable
class FigureMaker(Protocol):
    def figures(self, spec: Any, analysis: Analysis, records: list[dict], curves: list[dict],
                out_dir: Path) -> list[Path]: ...


@runtime_checkable
class Summarizer(Protocol):
    def summary(self, entries: list, figure_dir: Path) -> tuple[list[Table], list[str], list[Path]]: ...


@runtime_checkable
class Planner(Protocol):
    def workload(self, spec: Any, profile: str) -> Workload: ...


@runtime_checkable
class Viewer(Protocol):
    def samples(self, spec: Any, records: list[dict]) -> Any: ...


# Optional hooks a kind declares on its Kind, never found by looking for an attribute: hook -> (role of the module
# that provides it, the name there). Loading a module checks its hooks both ways (declared and present).
HOOKS = {"claim_catalogue": ("analysis", "CLAIM_CATALOGUE"), "spec_notes": ("analysis", "spec_notes"),
         "summary_pages": ("summary", "pages"), "dry_run_overrides": ("plan", "dry_run_overrides")}


@dataclass(frozen=True)
class Kind:
    """Everything the core needs to know about a kind. Module fields name modules of the kind's package (relative
    names); None means the kind has none."""

    spec_model: type  # the kind's Pydantic spec model (SpecBase subclass); its `kind` literal is the kind's name
    executor: str = "executor"  # run(spec, ctx) -> RunOutput: models -> records; the only module that loads models
    analysis: str = "analysis"  # analyze(spec, records, curves) -> Analysis; headline_metrics(spec) -> keys
    figures: str = "figures"  # figures(spec, analysis, records, curves, out_dir) -> paths
    summary: str | None = None  # summary(entries, figure_dir) -> (tables, notes, figures), across the kind's specs
    plan: str | None = None  # workload(spec, profile) -> Workload, for `harness plan` and the memory check
    view: str | None = None  # samples(spec, records): what `harness view` shows of each run
    parts: tuple[str, ...] = ()  # modules a run loads with load_part only when its spec's code_parts() names them
    distributed: bool = False  # under `accelerate launch` the executor shards its own work over ctx.processes
    claim_catalogue: bool = False  # the analysis has CLAIM_CATALOGUE, the claims a spec may list (harness/claims.py),
    # so the page of a spec not run yet still checks the report's own numbers
    spec_notes: bool = False  # the analysis has spec_notes(spec) -> list[str]: what follows from the spec alone
    summary_pages: bool = False  # the summary has pages(entries, figure_dir) -> further cross-spec pages, each
    # (name, title, tables, notes, figures)
    dry_run_overrides: bool = False  # the plan has dry_run_overrides(spec, steps, items, tokens) -> overrides that
    # bound a `harness dry-run` (fewer steps, items, tokens)

    @property
    def name(self) -> str:
        return self.spec_model.model_fields["kind"].annotation.__args__[0]

    def modules(self) -> dict[str, str]:
        """Role -> relative module name, for every module the kind names."""
        roles = {"executor": self.executor, "analysis": self.analysis, "figures": self.figures,
                 "summary": self.summary, "plan": self.plan, "view": self.view}
        return {role: module for role, module in roles.items() if module is not None}


ROLES = {"executor": Executor, "analysis": Analyzer, "figures": FigureMaker, "summary": Summarizer,
         "plan": Planner, "view": Viewer}
