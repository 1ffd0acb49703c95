"""`harness run --sweep/--seeds`: every combination in its own run directory, compared on one page."""

import subprocess
import sys

import pytest

from conftest import REPO
from harness.sweep import split_values, variants
from registry.errors import SpecError


def test_sweep_values_split_at_top_level_commas_and_make_one_variant_per_combination():
    assert split_values("16,32") == ["16", "32"]
    assert split_values("[0,1],[2]") == ["[0,1]", "[2]"]
    found = variants(REPO / "specs" / "sst2_8tok.yaml", ("bridge.soft_tokens=4,8", "+training.steps=2,3"), "0,1")
    assert [v.name for v in found] == ["soft_tokens-4__steps-2", "soft_tokens-4__steps-3",
                                       "soft_tokens-8__steps-2", "soft_tokens-8__steps-3"]
    assert found[3].overrides == ("bridge.soft_tokens=8", "training.steps=3", "training.seeds=[0,1]")
    # a kind without a seed axis inside a run gets one run per seed
    residual = variants(REPO / "specs" / "residual_gain_local.yaml", (), "0,1")
    assert [v.overrides for v in residual] == [("seed=0",), ("seed=1",)]
    with pytest.raises(SpecError, match="expected KEY=V1,V2"):
        variants(REPO / "specs" / "sst2_8tok.yaml", ("bridge.soft_tokens",), None)


@pytest.mark.slow
def test_a_tiny_sweep_runs_every_variant_and_pairs_them_against_the_first(tmp_path):
    command = [sys.executable, "-m", "harness.cli", "run", "specs/sst2_8tok.yaml", "--profile", "tiny", "--quiet",
               "--runs-dir", str(tmp_path / "runs"), "--run-id", "sw", "--cache-dir", str(tmp_path / "cache"),
               "--sweep", "bridge.soft_tokens=4,8", "--seeds", "0,1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    place = tmp_path / "runs" / "sw"
    for name in ("soft_tokens-4", "soft_tokens-8"):
        assert (place / name / "results" / "sst2_8tok" / "metrics.json").is_file()
    page = (place / "sweep.md").read_text()
    assert "| soft_tokens-4 | `bridge.soft_tokens=4 training.seeds=[0,1]` | bridge.generation.accuracy |" in page
    assert "| soft_tokens-8 | bridge.scored | 12 |" in page  # every outcome the variants share, paired
    assert not (REPO / "runs" / "sw").exists()
