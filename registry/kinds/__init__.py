"""Every spec kind, selected by the `kind` field (a discriminated union).

To add a kind: write `registry/kinds/<kind>.py` with a SpecBase subclass whose `kind` is a
Literal, list it in SPEC_TYPES, and add its executor `harness/experiments/<kind>.py`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from registry.kinds.bridge import BridgeSpec
from registry.kinds.residual_gain import ResidualGainSpec
from registry.kinds.tre_sweep import TRESweepSpec

SPEC_TYPES = (ResidualGainSpec, TRESweepSpec, BridgeSpec)
KINDS: tuple[str, ...] = tuple(t.model_fields["kind"].annotation.__args__[0] for t in SPEC_TYPES)

AnySpec = Annotated[Union[SPEC_TYPES], Field(discriminator="kind")]  # type: ignore[valid-type]
SPEC_ADAPTER: TypeAdapter = TypeAdapter(AnySpec)


def spec_json_schema() -> dict:
    """JSON Schema of every spec kind, for editors (`harness schema`)."""
    schema = SPEC_ADAPTER.json_schema()
    schema["title"] = "Experiment spec"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
