"""Every spec in specs/ runs end to end in the tiny profile (random tiny models, synthetic data)."""

import json
import math

import pytest

from conftest import SPECS
from harness.engine import RunSettings
from harness.workflow import run_and_analyze as run_spec
from harness.fsutil import read_jsonl
from harness.kinds import analyzer
from registry import load_spec


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_runs_in_the_tiny_profile(path, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    settings = RunSettings(profile="tiny", results_dir=results, cache_dir=tmp_path_factory.mktemp("cache"),
                           device="cpu", show_progress=False)
    run_dir = run_spec(path, settings).run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    spec = load_spec(path, "tiny")
    headline = analyzer(spec.kind).headline_metrics(spec)
    missing = [key for key in headline if key not in metrics]  # undefined (NaN) values never reach metrics.json
    assert headline and not missing, f"headline metrics missing or not finite: {missing}"
    assert all(math.isfinite(v) for v in metrics.values())
    assert read_jsonl(run_dir / "records.jsonl")
    assert json.loads((run_dir / "run.json").read_text())["profile"] == "tiny"
