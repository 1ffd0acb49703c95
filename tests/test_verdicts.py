"""Only the claims engine writes verdicts: no kind module holds a verdict word, and every verdict on every page of
the committed results comes from a finding the engine made."""

import re

import pytest

from conftest import REPO, SPECS
from harness import claims as C
from harness import kinds
from harness.analyze import analyze_saved, load_run
from harness.report.render import collect
from harness.report.tables import FindingsTable
from registry import load_spec

KIND_SOURCES = sorted((REPO / "harness" / "kinds").rglob("*.py"))
WORDS = [w for w in (*C.VERDICTS, *C.SELF_CHECKS) if w != C.NOT_RUN]


def test_no_kind_module_writes_a_verdict_word():
    offenders = []
    for path in KIND_SOURCES:
        text = path.read_text(encoding="utf-8").lower()
        offenders += [f"{path.relative_to(REPO)}: {word!r}" for word in WORDS if word in text]
        if re.search(r"[\"']not run[\"']", text):
            offenders.append(f"{path.relative_to(REPO)}: 'not run'")
    assert not offenders, offenders


def _committed_runs():
    return [p for p in SPECS if (REPO / "results" / p.stem / "run.json").is_file()]


@pytest.mark.parametrize("path", _committed_runs(), ids=lambda p: p.stem)
def test_every_verdict_of_a_committed_run_comes_from_the_engine(path):
    saved = load_run(REPO / "results" / path.stem, path)
    analysis = analyze_saved(saved)
    spec = load_spec(path, saved.run["profile"])
    assert len(analysis.findings) == len(spec.claims), "every claim the spec lists is decided"
    assert all(f.from_engine and f.verdict in C.VERDICTS and f.self_check in C.SELF_CHECKS for f in analysis.findings)
    texts = [*analysis.notes, *analysis.facts.values()]
    for table in analysis.tables:
        assert not isinstance(table, FindingsTable)
        texts += [table.title, table.caption, *(str(c) for row in table.rows for c in row)]
    leaked = [(word, text[:120]) for text in texts for word in C.verdict_words_in(text) if word in WORDS]
    assert not leaked, leaked


def test_cross_spec_pages_decide_through_the_engine(tmp_path):
    """The bridge summary and the lineage page: their verdicts are engine findings, their other tables none."""
    reports = collect(sorted(SPECS), REPO / "results")
    bridge = [r for r in reports if r.spec.kind == "bridge" and (r.run is None or r.run["profile"] == "local")]
    summarizer = kinds.summarizer("bridge")
    tables, notes, _ = summarizer.summary(bridge, tmp_path)
    pages = summarizer.pages(bridge, tmp_path)
    all_tables = tables + [t for page in pages for t in page[2]]
    findings = [f for t in all_tables if isinstance(t, FindingsTable) for f in t.findings]
    assert {f.claim.split(".")[0] for f in findings} >= {"inverse_token_scaling", "lineage"}
    assert all(f.from_engine for f in findings)
    for table in all_tables:
        if isinstance(table, FindingsTable):
            assert all(row[-2].text in C.VERDICTS for row in table.rows)  # the verdict cell links to its rule
            continue
        for row in table.rows:
            for cell in row:
                assert not [w for w in C.verdict_words_in(str(cell)) if w in WORDS], (table.key, cell)


def test_every_verdict_links_to_its_rule_on_the_rules_page(tmp_path):
    from harness.report.render import build_reports

    spec = REPO / "specs" / "sst2_8tok.yaml"
    build_reports([spec], REPO / "results", tmp_path / "out")
    rules = (tmp_path / "out" / C.RULES_PAGE).read_text()
    page = (tmp_path / "out" / "sst2_8tok.md").read_text()
    links = re.findall(r"\]\(verdict_rules\.md#([a-z-]+)\)", page)
    assert links and all(f'<a id="{anchor}"></a>' in rules for anchor in links)
    assert "findings.md" in (tmp_path / "out" / "README.md").read_text().split("\n\n")[1]
