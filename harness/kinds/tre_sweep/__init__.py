"""The TRE sweep (seed 000): calibration, signal and mapping, controllers, per-row sampling and generation, text metrics, analysis."""

from harness.kinds.contract import Kind
from registry.kinds.tre_sweep import TRESweepSpec

KIND = Kind(
    spec_model=TRESweepSpec,
    executor="executor",
    analysis="analysis",
    figures="figures",
    claim_catalogue=True,
    plan="plan",
    view="view",
    spec_notes=True,
    dry_run_overrides=True,
)
