"""One executor module per spec kind, named like the spec module (see base.py for the protocol)."""

from __future__ import annotations

import importlib
from types import ModuleType

from registry.kinds import KINDS


def executor_for(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise KeyError(f"no spec kind {kind!r}")
    return importlib.import_module(f"harness.experiments.{kind}")
