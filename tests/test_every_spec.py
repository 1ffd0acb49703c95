"""Every spec in specs/ runs end to end in the tiny profile (random tiny models, synthetic data)."""

import json
import math

import pytest

from conftest import SPECS
from harness.engine import RunSettings
from harness.workflow import run_and_analyze as run_spec
from harness.fsutil import read_jsonl


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_runs_in_the_tiny_profile(path, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    settings = RunSettings(profile="tiny", results_dir=results, cache_dir=tmp_path_factory.mktemp("cache"),
                           device="cpu", show_progress=False)
    run_dir = run_spec(path, settings).run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    assert read_jsonl(run_dir / "records.jsonl")
    assert json.loads((run_dir / "run.json").read_text())["profile"] == "tiny"
