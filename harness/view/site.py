"""`harness view`: a static HTML site of every run, for reading rather than printing. Built from results/, specs/
and the same analyses the pages use (no server needed to read it; `--serve` adds a local one).

- index.html: every spec with its headline metric beside the report's value, its verdict counts and a link; the
  findings of every report, filterable by verdict.
- <spec>.html: the spec's findings, tables and figures, and a sample browser over its records.jsonl: every item
  (generation, trajectory) with each method's output, parsed answer and outcome, filterable by method, outcome,
  class and seed, with a text search. The filters also read the page's #hash (e.g. #method=Bridge&outcome=invalid),
  so a filtered view is a link.

A kind says how its records are shown with the view module its KIND names: `samples(spec, records) -> rows` of
{item, seed, method, class, input, output, answer, outcome, note}.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import jinja2

from harness import kinds
from harness.claims import ANCHORS, RULES, RULES_PAGE
from harness.fsutil import exclusive, replace_dir, restore_interrupted, staging_dir
from harness.kinds.contract import Link, format_cell
from harness.report.render import SpecReport, check_out_dir, collect
from harness.report.tables import FindingsTable

VIEW_MARKER = ".harness-view"
ASSETS = ("view.js", "view.css")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.view", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["cell"] = lambda value, fmt="": format_cell(value, fmt)
    env.tests["link"] = lambda value: isinstance(value, Link)
    return env


def _json_for_script(data) -> str:
    """JSON safe inside <script type="application/json">: no '</' can end the element early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _headline(report: SpecReport) -> tuple[str | None, str | None, str | None]:
    """(metric, this run's value, the report's value) of the kind's first headline metric the run has."""
    if report.analysis is None:
        return None, None, None
    for key in kinds.analyzer(report.spec.kind).headline_metrics(report.spec):
        if key in report.analysis.metrics:
            reported = next((e.value for e in report.spec.expected if e.metric == key), None)
            return key, format_cell(report.analysis.metrics[key], ".4g"), \
                (format_cell(reported, ".4g") if reported is not None else None)
    return None, None, None


def build_site(spec_paths: list[Path], results_dir: Path, out_dir: Path, reports_dir: Path = Path("reports")) -> Path:
    """Write the site into `out_dir` (replaced as a whole; a folder this command did not make is refused)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / VIEW_MARKER).is_file():
        check_out_dir(out_dir)  # the same refusal as `harness report --out`, for a folder of someone else's files
    reports = collect(sorted(spec_paths), results_dir)
    env = _environment()
    with exclusive(out_dir, "the view folder"):
        restore_interrupted(out_dir)
        stage = staging_dir(out_dir)
        try:
            _write(stage, reports, env, Path(results_dir), Path(reports_dir))
            (stage / VIEW_MARKER).write_text("Made by `harness view`; it replaces this folder as a whole.\n")
            replace_dir(stage, out_dir)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return out_dir / "index.html"


def _write(stage: Path, reports: list[SpecReport], env, results_dir: Path, reports_dir: Path) -> None:
    for asset in ASSETS:
        shutil.copyfile(Path(__file__).with_name("templates") / asset, stage / asset)
    rows, findings = [], []
    for report in reports:
        findings += report.findings
        metric, value, reported = _headline(report)
        rows.append({"name": report.name, "kind": report.spec.kind, "profile": report.run["profile"] if report.run
                     else "no run yet", "metric": metric, "value": value, "reported": reported,
                     "verdicts": Counter(f.verdict for f in report.findings), "run": report.run is not None})
        _spec_page(stage, report, env, results_dir)
    summaries = sorted(p.stem for p in reports_dir.glob("*_summary.md")) if reports_dir.is_dir() else []
    cross = _cross_spec_findings(reports)
    findings = sorted(findings + cross, key=lambda f: (f.report, f.subject))
    counts = Counter(f.verdict for f in findings)
    (stage / "index.html").write_text(env.get_template("index.html.j2").render(
        rows=rows, findings=findings, counts=counts, anchors=ANCHORS, rules_page=RULES_PAGE, summaries=summaries),
        encoding="utf-8")
    (stage / "rules.html").write_text(env.get_template("rules.html.j2").render(rules=RULES), encoding="utf-8")


def _cross_spec_findings(reports: list[SpecReport]) -> list:
    """The findings of the cross-spec pages (token scaling, the GSM8K lineage), from the kinds' summarizers."""
    found = []
    for kind in sorted({r.spec.kind for r in reports}):
        summarizer = kinds.summarizer(kind)
        if summarizer is None:
            continue
        entries = [r for r in reports if r.spec.kind == kind]
        scratch = Path(tempfile.mkdtemp(prefix="harness-view-"))
        try:
            tables = list(summarizer.summary(entries, scratch)[0])
            if kinds.kind(kind).summary_pages:
                tables += [t for page in summarizer.pages(entries, scratch) for t in page[2]]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        found += [f for t in tables if isinstance(t, FindingsTable) for f in t.findings]
    return found


def _spec_page(stage: Path, report: SpecReport, env, results_dir: Path) -> None:
    samples = []
    if report.run is not None:
        viewer = kinds.viewer(report.spec.kind)
        if viewer is not None:
            from harness.fsutil import read_jsonl

            samples = viewer.samples(report.spec, read_jsonl(results_dir / report.name / "records.jsonl"))
    figures = []
    for name in report.figures:
        target = stage / "figures" / report.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(results_dir / report.name / "figures" / name, target / name)
        figures.append(f"figures/{report.name}/{name}")
    facets = {key: sorted({str(s[key]) for s in samples if s.get(key) not in (None, "")}, key=str)
              for key in ("method", "outcome", "class", "seed")}
    tables = ([report.findings_table] if report.findings_table else []) + (report.analysis.tables if report.analysis
                                                                          else [])
    (stage / f"{report.name}.html").write_text(env.get_template("spec.html.j2").render(
        r=report, tables=tables, figures=figures, samples=_json_for_script(samples), n_samples=len(samples),
        facets=facets, rules_page=RULES_PAGE), encoding="utf-8")
