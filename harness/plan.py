"""Resource planning: what a spec's run needs (parameters, memory, tokens) before anything loads.

Each kind may describe its workload in `harness/kinds/<kind>/plan.py` (`workload(spec) -> Workload`);
this module turns that and the catalog's model shapes into memory and token estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Workload:
    """The sizes of a run that memory and time depend on (per model, the largest forward it makes)."""

    batch: int  # rows per forward pass
    sequence: int  # positions per row, prompt and generated tokens together
    tokens: int  # token positions processed over the whole run (forward passes), all models together
    trains: bool = False  # backward passes through a frozen model (activations kept)
    trainable_parameters: int = 0  # parameters the run updates (optimizer state: fp32 weights, grads, 2 moments)
    models: list[str] = field(default_factory=list)  # every model the run loads at once
