"""The registry of experiment kinds: the core reaches a kind only through the functions here.

A kind is a package (built in: `harness/kinds/<kind>/`, whose spec model is `registry/kinds/<kind>.py`; installed:
the package an entry point names, see registry/kinds/__init__.py) whose `__init__.py` exports one object,
`KIND = Kind(...)` (harness/kinds/contract.py): its spec model, the modules that run, analyse, draw, summarise,
plan and show it, its optional parts and the optional hooks it provides. Its modules are imported by name when a
command needs them, and each is checked against its Protocol:

    executor   run(spec, ctx) -> RunOutput                 models -> records (the expensive part)
    analysis   analyze(spec, records, curves) -> Analysis  records -> metrics, tables, notes, findings
               headline_metrics(spec) -> list[str]         keys every complete run's metrics.json must hold
    figures    figures(spec, analysis, records, curves, out_dir) -> list[Path]
    summary    optional: summary(entries, figure_dir) -> (tables, notes, figure paths), across specs
    plan       optional: workload(spec, profile) -> Workload, the sizes `harness plan` turns into memory and tokens
    view       optional: samples(spec, records), the rows `harness view` shows
    parts      optional: modules the executor loads with `load_part(spec, name)` only when the spec needs them (a
               method, say); the spec model's `code_parts()` names them, and a run stage depends on the parts its
               spec declares, not on the others

No core module imports a kind's package, kinds never import each other, and this package and the contract import
no other module of the harness (tests/test_import_graph.py). Keeping the steps in separate modules is what lets DVC
rerun an analysis without rerunning the models: a run stage depends only on the executor's imports.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

from harness.kinds.contract import HOOKS, ROLES, Kind
from registry.kinds import KINDS, harness_package, spec_model


@cache
def kind(name: str) -> Kind:
    """The kind's declaration (its package's KIND), checked against the registry's spec model."""
    if name not in KINDS:
        raise KeyError(f"no spec kind {name!r}")
    package = importlib.import_module(harness_package(name))
    declared = getattr(package, "KIND", None)
    if not isinstance(declared, Kind):
        raise TypeError(f"{package.__name__} does not export KIND = Kind(...) (harness/kinds/contract.py)")
    if declared.spec_model is not spec_model(name):
        raise TypeError(f"{package.__name__}.KIND names spec model {declared.spec_model.__name__}, but the "
                        f"{name!r} kind's spec model is {spec_model(name).__name__}")
    return declared


def _module(name: str, role: str) -> ModuleType | None:
    declared = kind(name)
    relative = declared.modules().get(role)
    if relative is None:
        return None
    module = importlib.import_module(f"{harness_package(name)}.{relative}")
    if not isinstance(module, ROLES[role]):
        raise TypeError(f"{module.__name__} does not provide the {ROLES[role].__name__} contract")
    for hook, (where, attribute) in HOOKS.items():
        if where == role and getattr(declared, hook) != hasattr(module, attribute):
            raise TypeError(f"{module.__name__}: {harness_package(name)}.KIND declares {hook}={getattr(declared, hook)}"
                            f" but the module {'lacks' if getattr(declared, hook) else 'defines'} {attribute}")
    return module


def load_part(spec: Any, part: str) -> ModuleType:
    """The module `part` of the spec's kind package, which the spec must declare in `code_parts()`: its DVC stage
    and its state key follow the declared parts, so loading an undeclared one is refused rather than run with a
    dependency the stage does not know."""
    if part not in spec.code_parts():
        raise LookupError(f"{spec.name}: the run loads part {part!r} of the {spec.kind} kind, which the spec's "
                          f"code_parts() does not declare, so its DVC stage would not depend on it")
    if part not in kind(spec.kind).parts:
        raise LookupError(f"{spec.name}: part {part!r} is not among the {spec.kind} kind's parts "
                          f"({', '.join(kind(spec.kind).parts) or 'none'})")
    return importlib.import_module(f"{harness_package(spec.kind)}.{part}")


def executor(name: str) -> ModuleType:
    return _module(name, "executor")


def analyzer(name: str) -> ModuleType:
    return _module(name, "analysis")


def figure_maker(name: str) -> ModuleType:
    return _module(name, "figures")


def summarizer(name: str) -> ModuleType | None:
    """The kind's cross-spec summary, or None if it has none."""
    return _module(name, "summary")


def planner(name: str) -> ModuleType | None:
    """The kind's resource estimate, or None if it has none."""
    return _module(name, "plan")


def viewer(name: str) -> ModuleType | None:
    """The kind's samples for `harness view`, or None if it has none."""
    return _module(name, "view")
