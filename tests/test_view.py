"""`harness view` in a real headless browser (Debian's Chromium): the index lists every spec, a filter narrows the
sample browser's rows, a spec page shows its figures. Without a Chromium on PATH the browser test is skipped with
the reason (CI installs one)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from harness.fsutil import read_jsonl
from harness import kinds
from harness.view.site import build_site
from registry import load_spec

SPECS = [REPO / "specs" / f"{name}.yaml" for name in ("trec_16tok", "residual_gain_local", "halflife_toy",
                                                      "alignment_procrustes_local", "tre_sweep_gemma3_270m_nf4_local")]
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "view"
    build_site(SPECS, REPO / "results", out)
    return out


def _dom(url: str, profile: Path) -> str:
    result = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_every_kind_shows_its_records_and_the_pages_escape_them(site):
    for spec_path in SPECS:
        spec = load_spec(spec_path, "local")
        rows = kinds.viewer(spec.kind).samples(spec, read_jsonl(REPO / "results" / spec.name / "records.jsonl"))
        assert rows and all({"item", "method", "output", "answer", "outcome"} <= set(r) for r in rows), spec.name
        page = (site / f"{spec.name}.html").read_text()
        data = page.split('<script type="application/json" id="samples-data">')[1].split("</script>")[0]
        assert len(json.loads(data)) == len(rows)  # embedded whole, and no '</' ends the element early
    assert (site / "index.html").is_file() and (site / "rules.html").is_file()


@pytest.mark.skipif(BROWSER is None, reason="no Chromium (chromium, chromium-browser or google-chrome) on PATH: "
                                            "install Debian's chromium to run the browser test")
def test_the_site_in_a_headless_browser(site, tmp_path):
    index = _dom(f"file://{site}/index.html", tmp_path / "p1")
    listed = re.findall(r'<tr class="spec-row"><td><a href="([\w]+)\.html">', index)
    assert sorted(listed) == sorted(p.stem for p in SPECS)
    assert re.search(r'data-count="findings-table">(\d+) of \1 rows<', index)  # the script ran: every finding shown
    # a filter set from the link narrows the rows to exactly the records that match
    spec = load_spec(REPO / "specs" / "trec_16tok.yaml", "local")
    rows = kinds.viewer("bridge").samples(spec, read_jsonl(REPO / "results" / "trec_16tok" / "records.jsonl"))
    expected = sum(r["method"] == "Text relay" and r["outcome"] == "invalid" for r in rows)
    page = _dom(f"file://{site}/trec_16tok.html#method=Text+relay&outcome=invalid", tmp_path / "p2")
    shown = re.search(r'data-count="samples-table">(\d+) of (\d+) rows<', page)
    assert shown and int(shown.group(1)) == expected < int(shown.group(2)) == len(rows)
    figures = re.findall(r'<img src="(figures/trec_16tok/[\w.]+\.png)"', page)
    assert figures and all((site / f).is_file() for f in figures)
