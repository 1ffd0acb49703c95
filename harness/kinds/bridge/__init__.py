"""The latent bridge (seed 002): modules, sender-state cache, receiver inputs, training, evaluation, analysis."""

from harness.kinds.contract import Kind
from registry.kinds.bridge import BridgeSpec

KIND = Kind(
    spec_model=BridgeSpec,
    executor="executor",
    analysis="analysis",
    figures="figures",
    claim_catalogue=True,
    summary="summary",
    plan="plan",
    view="view",
    parts=("latent_bridge", "flow_bridge", "prompt_tuning", "continuation"),
    distributed=True,
    summary_pages=True,
    dry_run_overrides=True,
)
