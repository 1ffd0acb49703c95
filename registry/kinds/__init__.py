"""Every spec kind, selected by the `kind` field.

A kind is a module `registry/kinds/<kind>.py` that defines `SPEC_MODEL`, a SpecBase subclass whose
`kind` is `Literal["<kind>"]`. Kinds are found by listing this package, and a spec is validated by its
own kind's model only, so adding a kind touches no shared file: a spec model here, a package
`harness/kinds/<kind>/`, and specs. (It also keeps every existing run stage's dependencies unchanged
when a kind is added; see harness/pipeline.py.)
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from registry.base import suggest
from registry.errors import SpecError

KINDS: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


@cache
def spec_model(kind: str) -> type:
    """The spec model of `kind` (imports only that kind's module)."""
    if kind not in KINDS:
        raise SpecError(f"unknown kind {kind!r}{suggest(kind, list(KINDS))} (expected one of: {', '.join(KINDS)})",
                        field="kind")
    model = importlib.import_module(f"{__name__}.{kind}").SPEC_MODEL
    declared = model.model_fields["kind"].annotation.__args__[0]
    if declared != kind:
        raise TypeError(f"registry/kinds/{kind}.py: SPEC_MODEL declares kind {declared!r}")
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
