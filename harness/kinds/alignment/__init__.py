"""Cross-model injection by layer, orthogonal Procrustes and learned adapters (seed 003)."""

from harness.kinds.contract import Kind
from registry.kinds.alignment import AlignmentSpec

KIND = Kind(
    spec_model=AlignmentSpec,
    executor="executor",
    analysis="analysis",
    figures="figures",
    claim_catalogue=True,
    summary="summary",
    plan="plan",
    view="view",
    distributed=True,
    dry_run_overrides=True,
)
