"""Spec + profile -> the run's half of a run directory, written atomically, with provenance.

results/<name>/
  records.jsonl  one row per item / prompt / sample: enough to recompute every statistic
  run.json       resolved spec, spec hash, profile, seed, git commit, versions, device, wall time, phase times,
                 and which cached state (checkpoints) was trained, resumed or reused
  curves.csv     series for DVC plots (training logs, per-layer or per-position means)
The analysis stage (harness/analyze.py) adds metrics.json and figures/ from those files alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from harness import kinds
from harness.codegraph import code_digest, run_roots
from harness.context import Processes, RunContext
from harness.fsutil import (DEFAULT_CACHE_DIR, Interrupted, atomic_write_text, check_writable, exclusive, real_dir,
                            replace_dir, restore_interrupted, staging_dir, write_json, write_jsonl)
from harness.models import ModelProvider, resolve_device
from registry import load_spec_all_profiles
from registry.catalog import check_runnable, model_entry
from registry.errors import SpecError

TRACKED_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "statsmodels", "scipy", "numpy",
                    "pydantic", "gguf", "safetensors", "tokenizers", "bitsandbytes", "latent-harness")


@dataclass
class RunSettings:
    profile: str = "local"
    results_dir: Path = Path("results")
    cache_dir: Path = DEFAULT_CACHE_DIR
    data_mirror: Path | None = None
    device: str = "auto"
    overrides: tuple[str, ...] = ()
    show_progress: bool = True


@dataclass
class RunSummary:
    name: str
    run_dir: Path
    wall_seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def spec_hash(spec_dict: dict, profile: str) -> str:
    canonical = json.dumps({"spec": spec_dict, "profile": profile}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def state_key(spec, profile: str) -> dict:
    """Everything that determines a run's trained state: the resolved spec and profile (which fix every
    seed), each model's catalog source (weights by sha256 or revision), the source of the code the run
    executes, and the versions of the libraries that compute it."""
    return {
        "spec_hash": spec_hash(spec.model_dump(mode="json"), profile),
        "models": {name: model_entry(name).source(profile).model_dump(mode="json") for name in spec.model_names()},
        "code": code_digest(tuple(run_roots(spec.kind, spec.code_parts())), spec.kind),
        "versions": {p: v for p, v in _versions().items() if p in ("torch", "transformers", "accelerate")},
    }


def state_dir_for(cache_dir: Path, spec, profile: str) -> tuple[Path, str]:
    """Where a run keeps checkpoints and resumable state, keyed by `state_key`: only an identical run
    with identical code resumes or reuses it (and a benchmark finds the bridge that run trained)."""
    canonical = json.dumps(state_key(spec, profile), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return Path(cache_dir) / "state" / f"{spec.name}-{digest[:16]}", digest


# Tracked files that `dvc repro` itself writes: a change there says nothing about the code or specs
# that produced a result, so it does not make the working tree count as dirty.
WRITTEN_BY_PIPELINE = ("dvc.lock", "results", "reports")


def _git_state() -> dict:
    """Commit of the working tree and the tracked files that differ from it (uncommitted changes)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None, "modified": None}
    excluded = [f":(top,exclude){path}" for path in WRITTEN_BY_PIPELINE]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded)
    modified = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {"commit": commit, "dirty": bool(modified), "modified": modified}


def _versions() -> dict:
    found = {}
    for package in TRACKED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _write_curves(path: Path, rows: list[dict]) -> None:
    """Always written (an empty file when a run has no series), so the file is a fixed DVC output."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run_spec(spec_path: Path, settings: RunSettings) -> RunSummary:
    """Run a spec into results/<name>/. Under `accelerate launch --num_processes N` every process calls
    this: a kind that declares `distributed=True` (its KIND) runs on all of them (it shards its own
    work through ctx.processes), any other kind runs on the main process alone; only the main process
    takes the locks and writes the run directory and checkpoints."""
    # every profile must validate (as `harness validate` checks), so an overlay cannot hide a bad base value
    spec = load_spec_all_profiles(spec_path, settings.overrides)[settings.profile]
    try:
        check_runnable(spec, settings.profile, settings.data_mirror)
    except SpecError as exc:
        raise exc.located(str(spec_path)) from None
    executor = kinds.executor(spec.kind)
    processes = Processes.current(settings.device)
    final_dir = real_dir(Path(settings.results_dir) / spec.name)
    if not kinds.kind(spec.kind).distributed:
        if not processes.is_main:
            return RunSummary(spec.name, final_dir, 0.0)  # the main process runs this kind alone
        processes = Processes(device=processes.device)  # ... as one process: no collective calls
    device = processes.device or resolve_device(settings.device)
    state_dir, state_digest = state_dir_for(settings.cache_dir, spec, settings.profile)
    if not processes.is_main:
        processes.wait()  # the main process holds the locks before anyone trains
        return _run_locked(spec_path, spec, settings, executor, device, final_dir, state_dir, state_digest, processes)
    check_writable(final_dir.parent, need_bytes=RESULTS_HEADROOM)
    check_writable(Path(settings.cache_dir), need_bytes=CACHE_HEADROOM)
    with exclusive(final_dir, "the run directory"), exclusive(state_dir, "the training state folder"):
        restore_interrupted(final_dir)
        processes.wait()
        try:
            return _run_locked(spec_path, spec, settings, executor, device, final_dir, state_dir, state_digest,
                               processes)
        except KeyboardInterrupt as exc:  # the swap defers interrupts, so the folder is wholly old or wholly new
            if isinstance(exc, Interrupted):
                raise
            held = "its previous complete run" if (final_dir / "run.json").is_file() else "no run, as before"
            raise Interrupted(f"interrupted before the run finished; {final_dir} is untouched and holds {held} "
                              f"(trained state that was checkpointed resumes on the next run)") from None


# Free space a run checks for before it loads a model: results are small text files; the cache may
# receive a dequantised model (about 1 GiB for the local models) and checkpoints.
RESULTS_HEADROOM = 64 * 2**20
CACHE_HEADROOM = 2 * 2**30


def _run_locked(spec_path, spec, settings, executor, device, final_dir, state_dir, state_digest,
                processes: Processes) -> RunSummary:
    spec_dict = spec.model_dump(mode="json")
    digest = spec_hash(spec_dict, settings.profile)
    if processes.is_main:
        state_dir.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(final_dir) if processes.is_main else Path(tempfile.mkdtemp(prefix=f"{spec.name}.rank"))
    try:
        seed_everything(spec.seed)
        models = ModelProvider(settings.profile, settings.cache_dir, device)
        ctx = RunContext(profile=settings.profile, models=models, device=device, seed=spec.seed, work_dir=stage,
                         state_dir=state_dir, cache_dir=Path(settings.cache_dir), data_mirror=settings.data_mirror,
                         show_progress=settings.show_progress and processes.is_main, processes=processes)
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        try:
            output = executor.run(spec, ctx)
        except SpecError as exc:  # a spec choice the loaded model cannot honour (a layer point, a template)
            raise exc.located(str(spec_path)) from None
        wall = time.perf_counter() - t0
        if not processes.is_main:  # the main process gathered everything it writes
            shutil.rmtree(stage, ignore_errors=True)
            return RunSummary(spec.name, final_dir, wall)
        write_jsonl(stage / "records.jsonl", output.records)
        _write_curves(stage / "curves.csv", output.curves)
        write_json(stage / "run.json", {
            "name": spec.name,
            "kind": spec.kind,
            "spec_file": str(spec_path),
            "spec": spec_dict,
            "spec_hash": digest,
            "profile": settings.profile,
            "overrides": list(settings.overrides),
            "seed": spec.seed,
            "git": _git_state(),
            "versions": _versions(),
            "python": sys.version.split()[0],
            "hardware": {**_device_info(device), "processes": processes.count},
            "models": models.provenance,
            "data_mirror": str(settings.data_mirror) if settings.data_mirror else None,
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 3),
            "phases": ctx.phase_seconds,
            "state": {"dir": str(state_dir), "key": state_digest, "trained": ctx.state_use},
            "n_records": len(output.records),
        })
        replace_dir(stage, final_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return RunSummary(spec.name, final_dir, wall)
