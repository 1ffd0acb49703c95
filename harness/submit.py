"""Cluster jobs through submitit: each spec becomes one job that runs `harness run` and writes the same
run directory a local run writes. Resources come from the plan (`harness plan`): the job's memory is the
plan's peak plus headroom, and a GPU smaller than the plan needs is refused before anything is queued."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.plan import GIB, USABLE_FRACTION, gib, plan_spec
from registry import load_spec


class SubmitError(RuntimeError):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code  # 1: the spec does not fit the resources; 2: a bad request


@dataclass
class Resources:
    partition: str | None = None
    gpus: int = 1  # GPUs per job (0: CPU only)
    gpu_memory_gib: float | None = None  # the GPU the partition has, to check the plan against
    cpus: int = 8
    timeout_min: int = 240
    profile: str = "paper"


def job_memory_gb(plan_bytes: float) -> int:
    """Host memory for a job: the plan's peak (weights pass through host memory while loading) plus 16 GB."""
    return int(math.ceil(plan_bytes / 1e9)) + 16


def _executor(kind: str, folder: Path):
    try:
        import submitit
    except ImportError:
        raise SubmitError("submitit is not installed: pip install submitit") from None
    if kind in ("local", "slurm"):
        return submitit.AutoExecutor(folder=folder, cluster=kind)
    raise SubmitError(f"unknown executor {kind!r} (expected slurm or local)")


def submit(spec_paths: list[Path], executor: str, resources: Resources, results_dir: Path, log_dir: Path,
           overrides: tuple[str, ...] = ()) -> list:
    """Check every spec against the resources first (nothing is queued if one does not fit), then queue one job
    per spec; returns submitit jobs."""
    plans = []
    for path in spec_paths:
        spec = load_spec(path, resources.profile, overrides)
        try:
            plan = plan_spec(spec, resources.profile)
        except ValueError:
            plan = None
        if plan is not None and resources.gpu_memory_gib is not None and resources.gpus > 0:
            usable = resources.gpu_memory_gib * GIB * USABLE_FRACTION
            if plan.total_bytes > usable:
                raise SubmitError(f"{path}: needs about {gib(plan.total_bytes)} on one GPU ({resources.profile} profile), "
                                  f"more than the {resources.gpu_memory_gib:g} GiB GPU can hold ({gib(usable)} usable); "
                                  f"use a larger GPU or a quantised model", exit_code=1)
        plans.append((path, spec, plan))
    pool = _executor(executor, log_dir)
    from submitit.helpers import CommandFunction  # importable: _executor checked submitit

    jobs = []
    for path, spec, plan in plans:
        params = {"timeout_min": resources.timeout_min, "name": f"harness-{spec.name}",
                  "mem_gb": job_memory_gb(plan.total_bytes) if plan else 64, "cpus_per_task": resources.cpus}
        if resources.gpus or executor == "slurm":
            params["gpus_per_node"] = resources.gpus
        if executor == "slurm" and resources.partition:
            params["slurm_partition"] = resources.partition
        pool.update_parameters(**params)
        command = [sys.executable, "-m", "harness.cli", "run", str(path), "--profile", resources.profile, "--quiet",
                   "--results-dir", str(results_dir), *[arg for o in overrides for arg in ("--set", o)]]
        jobs.append(pool.submit(CommandFunction(command, cwd=os.getcwd(), verbose=False)))
    return jobs
