"""Routing-pressure half-life of a mixture-of-experts model (seed 004)."""

from harness.kinds.contract import Kind
from registry.kinds.halflife import HalfLifeSpec

KIND = Kind(
    spec_model=HalfLifeSpec,
    executor="executor",
    analysis="analysis",
    figures="figures",
    claim_catalogue=True,
    plan="plan",
    view="view",
    dry_run_overrides=True,
)
