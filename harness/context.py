"""What an executor receives (RunContext): the run's profile, models, device, seed, places and progress. What it
returns (RunOutput) and the rest of the kind contract are in harness/kinds/contract.py."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.data import load_items
from harness.models import ModelProvider


@dataclass
class Processes:
    """The processes a run is split over: one, or N under `accelerate launch --num_processes N`."""

    index: int = 0
    count: int = 1
    device: torch.device | None = None  # the process's own device when launched; None: the --device choice
    state: object = None  # accelerate's PartialState when launched

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    @classmethod
    def current(cls, device: str = "auto") -> "Processes":
        """Read the launcher's environment; a plain `harness run` is one process and starts nothing."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state.device, state)


@dataclass
class RunContext:
    profile: str
    models: ModelProvider
    device: torch.device
    seed: int
    work_dir: Path  # the staging run directory; extra artifacts may go here
    state_dir: Path  # survives interrupted runs: checkpoints, content-addressed caches
    cache_dir: Path | None = None  # shared, content-addressed caches (e.g. sender hidden states)
    data_mirror: Path | None = None
    show_progress: bool = True
    processes: Processes = field(default_factory=Processes)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # recorded in run.json as `phases`
    # what happened to each piece of trained state (run.json `state.trained`): e.g.
    # {"bridge.seed0": {"status": "trained" | "resumed" | "reused", "from_step": 0, "steps": 250}}
    state_use: dict[str, dict] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        """Time a phase of the run (model loading, sender states, training, one method's evaluation);
        a phase entered twice accumulates."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[name] = round(self.phase_seconds.get(name, 0.0) + time.perf_counter() - start, 3)

    def progress(self, iterable=None, **kwargs):
        return tqdm(iterable, disable=not self.show_progress, dynamic_ncols=True, **kwargs)

    def items(self, dataset: str, split: str, limit: int | None = None, seed: int | None = None) -> list[dict]:
        """A dataset split: synthetic (tiny), the mirror where it has the split, else the hub."""
        from registry.catalog import dataset_entry

        mirror = self.data_mirror if split in dataset_entry(dataset).mirror_splits else None
        return load_items(dataset, split, profile=self.profile, mirror=mirror, limit=limit,
                          seed=self.seed if seed is None else seed)
