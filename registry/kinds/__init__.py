"""Every spec kind, selected by the `kind` field.

A built-in kind is a module `registry/kinds/<kind>.py` that defines `SPEC_MODEL`, a SpecBase subclass whose
`kind` is `Literal["<kind>"]`, and a package `harness/kinds/<kind>/` whose `__init__.py` exports `KIND` (the
kind's contract, harness/kinds/contract.py). Built-in kinds are found by listing this
package, so adding one touches no shared file (and keeps every existing run stage's dependencies unchanged; see
harness/pipeline.py).

An installed distribution adds a kind through the entry-point group `latent_harness.kinds`: the entry point's
name is the kind, its value the kind's package, which holds `spec.py` (defining `SPEC_MODEL`, importing no
torch) beside the harness side (`executor.py`, `analysis.py`, `figures.py`, optional parts; its `__init__.py`
exports `KIND`). For example, in
the distribution's pyproject.toml:

    [project.entry-points."latent_harness.kinds"]
    entropy_probe = "entropy_probe"

Only the package's `spec` module is imported to validate a spec; an installed kind cannot replace a built-in one.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import warnings
from functools import cache
from importlib import metadata
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from registry.base import suggest
from registry.errors import SpecError

ENTRY_POINT_GROUP = "latent_harness.kinds"
BUILT_IN: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def _installed() -> dict[str, str]:
    """Kinds that installed distributions register: kind -> its package."""
    found = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name!r} of {entry.dist.name if entry.dist else 'an installed distribution'}"
        if entry.name in BUILT_IN:
            warnings.warn(f"{where} is ignored: {entry.name!r} is a built-in kind", stacklevel=2)
        elif not re.fullmatch(r"[a-z][a-z0-9_]*", entry.name) or not re.fullmatch(r"[A-Za-z_][\w.]*", entry.value):
            warnings.warn(f"{where} is ignored: the name must be a kind name (lower-case, digits, underscores) and "
                          f"the value a package name, got {entry.value!r}", stacklevel=2)
        else:
            found[entry.name] = entry.value
    return found


INSTALLED: dict[str, str] = _installed()
KINDS: tuple[str, ...] = tuple(sorted({*BUILT_IN, *INSTALLED}))


def spec_module(kind: str) -> str:
    """The module that defines the kind's SPEC_MODEL."""
    return f"{INSTALLED[kind]}.spec" if kind in INSTALLED else f"{__name__}.{kind}"


def harness_package(kind: str) -> str:
    """The package of the kind's executor, analysis and figures."""
    return INSTALLED.get(kind, f"harness.kinds.{kind}")


@cache
def spec_model(kind: str) -> type:
    """The spec model of `kind` (imports only that kind's module)."""
    if kind not in KINDS:
        raise SpecError(f"unknown kind {kind!r}{suggest(kind, list(KINDS))} (expected one of: {', '.join(KINDS)})",
                        field="kind")
    module = importlib.import_module(spec_module(kind))
    model = getattr(module, "SPEC_MODEL", None)
    if model is None:
        raise TypeError(f"{module.__name__} does not define SPEC_MODEL, the spec model of the {kind!r} kind")
    declared = model.model_fields["kind"].annotation.__args__[0]
    if declared != kind:
        raise TypeError(f"{module.__name__}: SPEC_MODEL declares kind {declared!r}, not {kind!r}")
    return model


def validate_spec(data: dict, context: dict | None = None):
    """Validate a merged spec mapping with its kind's model (pydantic errors propagate)."""
    kind = data.get("kind")
    if kind is None:
        raise SpecError("the spec has no `kind` field", field="kind")
    if not isinstance(kind, str):
        raise SpecError(f"must be the name of a spec kind (got {kind!r})", field="kind")
    return spec_model(kind).model_validate(data, context=context)


def spec_json_schema() -> dict:
    """JSON Schema of every spec kind, for editors (`harness schema`)."""
    models = tuple(spec_model(kind) for kind in KINDS)
    schema = TypeAdapter(Annotated[Union[models], Field(discriminator="kind")]).json_schema()  # type: ignore[valid-type]
    schema["title"] = "Experiment spec"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
