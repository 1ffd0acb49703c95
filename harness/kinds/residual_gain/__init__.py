"""Residual-stream gain (seed 001): per-layer norms and gains, W_U spectral norm, the H18 correlation."""

from harness.kinds.contract import Kind
from registry.kinds.residual_gain import ResidualGainSpec

KIND = Kind(
    spec_model=ResidualGainSpec,
    executor="executor",
    analysis="analysis",
    figures="figures",
    claim_catalogue=True,
    plan="plan",
    view="view",
    spec_notes=True,
    dry_run_overrides=True,
)
