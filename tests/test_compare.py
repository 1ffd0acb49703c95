"""`harness compare`: two runs paired item by item, with the pages' own test."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO
from harness.compare import compare
from harness.engine import RunSettings
from harness.workflow import run_and_analyze
from registry import load_spec


@pytest.mark.slow
def test_compare_gives_the_lineage_pages_own_paired_test(tmp_path):
    from harness.analyze import analyze_saved, load_run
    from harness.kinds.bridge import lineage_page

    results = tmp_path / "results"
    settings = RunSettings(profile="tiny", results_dir=results, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False)
    for name in ("gsm8k_v01", "gsm8k_v02"):
        run_and_analyze(REPO / "specs" / f"{name}.yaml", settings)
    a, b, rows = compare("gsm8k_v02", "gsm8k_v01", REPO / "specs", results)
    row = next(r for r in rows if r.outcome == "bridge.generation")
    entries = []
    for name in ("gsm8k_v01", "gsm8k_v02"):
        saved = load_run(results / name, REPO / "specs" / f"{name}.yaml")
        entries.append(SimpleNamespace(spec=load_spec(REPO / "specs" / f"{name}.yaml", "tiny"),
                                       analysis=analyze_saved(saved), run=saved.run))
    cell = lineage_page._paired(entries[0], entries[1])  # the page's "vs previous row" cell for v02
    assert cell.startswith(f"{100 * row.difference:+.1f} pts, p {row.pvalue:.2g}")
    mine, theirs = (e.analysis.outcomes["bridge.generation"][0] for e in entries[::-1])
    assert row.only_a == sorted(i for i in mine if mine[i] > theirs[i])  # the flips, item by item
    assert row.only_b == sorted(i for i in mine if mine[i] < theirs[i])


def test_compare_reads_a_committed_run_at_a_revision_and_names_bad_input():
    result = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "trec_16tok", "trec_16tok@HEAD"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| bridge.generation | 200 |" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "compare", "trec_16tok", "trec_16tok@no-such-rev"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no committed run.json of 'trec_16tok' at 'no-such-rev'")
    assert json.loads((REPO / "results" / "trec_16tok" / "run.json").read_text())["name"] == "trec_16tok"
