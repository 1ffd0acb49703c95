"""The registry of experiment kinds and the contract each kind's package fulfils.

Everything that belongs to one built-in kind lives in `harness/kinds/<kind>/` (the name of its spec model's
`kind`, whose model is `registry/kinds/<kind>.py`); an installed kind's package holds the same modules beside its
`spec.py` (see registry/kinds/__init__.py for the entry point):

    executor.py   run(spec, ctx) -> RunOutput                 models -> records (the expensive part)
    analysis.py   analyze(spec, records, curves) -> Analysis  records -> metrics, tables, notes
                  headline_metrics(spec) -> list[str]         keys every complete run's metrics.json must hold
    figures.py    figures(spec, analysis, records, curves, out_dir) -> list[Path]
    summary.py    optional: summary(entries, figure_dir) -> (tables, notes, figure paths), across specs
    plan.py       optional: workload(spec, profile) -> Workload, the sizes `harness plan` turns into memory
                  and tokens
    <part>.py     optional: a module the executor loads with `load_part(spec, name)` only when the spec needs
                  it (a method, say); the spec model's `code_parts()` names them, and a run stage depends on
                  the parts its spec declares, not on the others

The core (engine, analysis stage, report) reaches a kind only through the functions below, which
import the kind's module by name; no core module imports a kind, and kinds never import each
other (tests/test_import_graph.py). Keeping the three steps in separate modules is what lets DVC
rerun an analysis without rerunning the models: a run stage depends only on the executor's imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from registry.kinds import KINDS, harness_package

if TYPE_CHECKING:
    from harness.context import RunContext, RunOutput
    from harness.plan import Workload
    from harness.report.tables import Analysis, Table


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


STEPS = {"executor": Executor, "analysis": Analyzer, "figures": FigureMaker, "summary": Summarizer, "plan": Planner}


def module_name(kind: str, step: str) -> str:
    """`harness.kinds.<kind>.<step>` for a built-in kind, `<package>.<step>` for an installed one."""
    return f"{harness_package(kind)}.{step}"


def _load(kind: str, step: str):
    if kind not in KINDS:
        raise KeyError(f"no spec kind {kind!r}")
    module = importlib.import_module(module_name(kind, step))
    if not isinstance(module, STEPS[step]):
        raise TypeError(f"{module.__name__} does not provide the {STEPS[step].__name__} contract")
    return module


def load_part(spec: Any, part: str):
    """The module `part` of the spec's kind package, which the spec must declare in `code_parts()`: its DVC stage
    and its state key follow the declared parts, so loading an undeclared one is refused rather than run with a
    dependency the stage does not know."""
    if part not in spec.code_parts():
        raise LookupError(f"{spec.name}: the run loads part {part!r} of the {spec.kind} kind, which the spec's "
                          f"code_parts() does not declare, so its DVC stage would not depend on it")
    return importlib.import_module(f"{harness_package(spec.kind)}.{part}")


def executor(kind: str) -> Executor:
    return _load(kind, "executor")


def analyzer(kind: str) -> Analyzer:
    return _load(kind, "analysis")


def figure_maker(kind: str) -> FigureMaker:
    return _load(kind, "figures")


def _optional(kind: str, step: str):
    if importlib.util.find_spec(module_name(kind, step)) is None:
        return None
    return _load(kind, step)


def summarizer(kind: str) -> Summarizer | None:
    """The kind's cross-spec summary, or None if it has none."""
    return _optional(kind, "summary")


def planner(kind: str) -> Planner | None:
    """The kind's resource estimate, or None if it has none."""
    return _optional(kind, "plan")
