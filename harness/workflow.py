"""Run then analyse one spec: what `harness run` does without --no-analyze (the DVC pipeline runs the
two halves as separate stages, so an analysis change never reruns a model)."""

from __future__ import annotations

from pathlib import Path

from harness.analyze import analyze_run
from harness.engine import RunSettings, RunSummary, run_spec


def run_and_analyze(spec_path: Path, settings: RunSettings) -> RunSummary:
    summary = run_spec(spec_path, settings)
    analyze_run(spec_path, settings.results_dir, summary.name)
    return summary
