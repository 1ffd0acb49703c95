"""Spec + profile -> the run's half of a run directory, written atomically, with provenance.

results/<name>/
  records.jsonl  one row per item / prompt / sample: enough to recompute every statistic
  run.json       resolved spec, spec hash, profile, seed, git commit, versions, device, wall time, phase times
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
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from harness import kinds
from harness.context import RunContext
from harness.fsutil import DEFAULT_CACHE_DIR, atomic_write_text, replace_dir, restore_interrupted, staging_dir, write_json, write_jsonl
from harness.models import ModelProvider, resolve_device
from registry import load_spec
from registry.catalog import dataset_entry, model_entry
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


def check_runnable(spec, profile: str, data_mirror: Path | None) -> None:
    """Fail before any model loads if a model or dataset has no source for the profile.

    The local profile reads datasets from the offline mirror only (the splits the catalog lists
    for it); the paper profile uses the mirror where it has the split and the hub otherwise.
    """
    for name in spec.model_names():
        model_entry(name).source(profile)
    if profile != "local":
        return
    for name, split in spec.data_needs():
        entry = dataset_entry(name)
        if split not in entry.mirror_splits:
            have = ", ".join(entry.mirror_splits) or "none"
            raise SpecError(f"dataset {name!r} split {split!r} is not in the offline mirror (it has: {have}), "
                            f"so this spec cannot run in the local profile; use --profile paper (hub) or another split")


def runnable_profiles(spec_by_profile: dict, data_mirror: Path | None = None) -> list[str]:
    ok = []
    for profile, spec in spec_by_profile.items():
        try:
            check_runnable(spec, profile, data_mirror)
            ok.append(profile)
        except SpecError:
            pass
    return ok


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def state_dir_for(cache_dir: Path, spec_name: str, digest: str) -> Path:
    """Where a run keeps checkpoints and resumable state: keyed by the resolved spec's hash, so only
    an identical run resumes (and a benchmark finds the bridge that run trained)."""
    return Path(cache_dir) / "state" / f"{spec_name}-{digest[:16]}"


def spec_hash(spec_dict: dict, profile: str) -> str:
    canonical = json.dumps({"spec": spec_dict, "profile": profile}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Tracked files that `dvc repro` itself rewrites between stages: a change there says nothing about
# the code or specs that produced a result, so it does not make the working tree count as dirty.
WRITTEN_BY_PIPELINE = ("dvc.lock",)


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
    spec = load_spec(spec_path, settings.profile, settings.overrides)
    try:
        check_runnable(spec, settings.profile, settings.data_mirror)
    except SpecError as exc:
        raise exc.located(str(spec_path)) from None
    executor = kinds.executor(spec.kind)
    device = resolve_device(settings.device)
    final_dir = Path(settings.results_dir) / spec.name
    restore_interrupted(final_dir)
    spec_dict = spec.model_dump(mode="json")
    digest = spec_hash(spec_dict, settings.profile)
    state_dir = state_dir_for(settings.cache_dir, spec.name, digest)
    state_dir.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(final_dir)
    try:
        seed_everything(spec.seed)
        models = ModelProvider(settings.profile, settings.cache_dir, device)
        ctx = RunContext(profile=settings.profile, models=models, device=device, seed=spec.seed, work_dir=stage,
                         state_dir=state_dir, cache_dir=Path(settings.cache_dir), data_mirror=settings.data_mirror,
                         show_progress=settings.show_progress)
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        try:
            output = executor.run(spec, ctx)
        except SpecError as exc:  # a spec choice the loaded model cannot honour (a layer point, a template)
            raise exc.located(str(spec_path)) from None
        wall = time.perf_counter() - t0
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
            "hardware": _device_info(device),
            "models": models.provenance,
            "data_mirror": str(settings.data_mirror) if settings.data_mirror else None,
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 3),
            "phases": ctx.phase_seconds,
            "n_records": len(output.records),
        })
        replace_dir(stage, final_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return RunSummary(spec.name, final_dir, wall)
