"""results/ + specs/ -> reports/*.md and reports/*.tex (booktabs), with figures.

Statistics are recomputed from each run's records.jsonl with the kind's `analyze`, so a saved
run can be re-analysed after the analysis code improves, without running models. Kinds are
reached only through the registry in harness/kinds/__init__.py.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness import kinds
from harness.analyze import SavedRunError, analyze_saved, load_run
from harness.claims import RULES, RULES_PAGE, VERDICTS, not_run_findings
from harness.fsutil import exclusive, replace_dir, restore_interrupted, staging_dir
from harness.kinds.contract import Analysis, Column, Link, Table, format_cell
from harness.report.coverage import seed_sections
from harness.report.tables import FindingsTable, findings_table
from registry import load_spec
from registry.errors import SpecError

_TEX_REPLACEMENTS = [
    ("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
    ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
    ("σ", r"$\sigma$"), ("θ", r"$\theta$"), ("ρ", r"$\rho$"), ("→", r"$\rightarrow$"), ("‖", r"$\|$"),
    ("×", r"$\times$"), ("≥", r"$\geq$"), ("≤", r"$\leq$"), ("±", r"$\pm$"), ("—", "---"), ("–", "--"),
    ("Δ", r"$\Delta$"), ("α", r"$\alpha$"),
]


_TEX_TABLE = str.maketrans(dict(_TEX_REPLACEMENTS))  # every source is one character: one pass, no re-escaping


def tex_escape(text) -> str:
    return str(text).translate(_TEX_TABLE)


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # what could open an HTML tag or comment; "p < 0.05" stays as written
# a URL scheme only where a URL could follow ("data:text/html,..."), not the prose "the report's own data: ..."
_SCHEMES = re.compile(r"\b(javascript|vbscript|data|file):(?=\S)", re.IGNORECASE)


def md_escape(text) -> str:
    """Text from specs and records as inert Markdown: no raw HTML (`<script>`), no link syntax, no script or file
    URLs, one table cell per line. A Link cell (the harness's own) becomes a link with escaped text."""
    if isinstance(text, Link):
        return f"[{md_escape(text.text)}]({text.target})"
    text = _TAG_START.sub("&lt;", str(text).replace("|", "\\|").replace("\n", " ").replace("](", "]\\("))
    return _SCHEMES.sub(lambda m: m.group(1) + "&#58;", text)


# What a pipeline stage writes: a run that regenerates them (dvc removes a stage's outputs first) is not
# made from uncommitted inputs, so pages do not call it dirty on their account.
PIPELINE_OUTPUTS = ("results/", "reports/", "dvc.lock")


def input_changes(git: dict) -> list[str]:
    """Uncommitted changes recorded in run.json that could have changed the run (its inputs, code, specs);
    runs recorded before the list existed report the bare flag as 'unknown files'."""
    if git.get("modified") is None:
        return ["unknown files"] if git.get("dirty") else []
    return [path for path in git["modified"] if not path.startswith(PIPELINE_OUTPUTS)]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tex"] = tex_escape
    env.filters["md"] = md_escape
    env.filters["cell"] = format_cell
    env.filters["input_changes"] = input_changes
    env.filters["anchor"] = _verdict_anchor
    return env


def render_table_md(table: Table) -> str:
    return _environment().get_template("table.md.j2").module.render_table(table)


@dataclass
class SpecReport:
    name: str
    spec: object
    spec_path: str
    run: dict | None = None
    analysis: Analysis | None = None
    figures: list[str] = field(default_factory=list)
    expected_table: Table | None = None
    notes: list[str] = field(default_factory=list)
    findings: list = field(default_factory=list)  # the claims engine's findings on the report's claims
    findings_table: Table | None = None


def _expected_table(spec, analysis: Analysis | None, run: dict | None) -> Table | None:
    if not spec.expected:
        return None
    profile = run["profile"] if run else None
    same = profile is not None and all(exp.profile == profile for exp in spec.expected)
    table = Table("expected", "Reported vs reproduced", [
        Column("Metric", align="l"), Column("Reported"), Column("Reproduced"), Column("Ratio", ".2f"),
        Column("Section", align="l"), Column("Note", align="l")],
        caption=("Not run yet." if run is None else
                 f"The reported values describe the same models as this {profile} run." if same else
                 "Reported values come from the report's models (paper profile). This run used the "
                 f"{profile} profile" + ("." if profile == "paper" else
                                         ", whose models differ, so the columns are not expected to agree."))
                + (" A reproduced '.seconds' value is this run's wall time of that phase, every training seed "
                   "together." if run and any(e.metric.endswith(".seconds") for e in spec.expected) else ""))
    for exp in spec.expected:
        got = None
        if analysis is not None:
            got = analysis.metrics.get(exp.metric, analysis.facts.get(exp.metric))
        if got is None and run and exp.metric.endswith(".seconds"):  # wall time of a phase (every seed together)
            got = run.get("phases", {}).get(exp.metric.removesuffix(".seconds"))
        ratio = got / exp.value if isinstance(got, float) and isinstance(exp.value, float) and exp.value else None
        reported = exp.value if isinstance(exp.value, str) else format_cell(exp.value, ",.4g")
        reproduced = got if isinstance(got, str) or got is None else format_cell(got, ",.4g")
        table.add(exp.metric, reported, reproduced if run else "no run yet", ratio, exp.section, exp.note)
    return table


class ReportInputsError(RuntimeError):
    """Every spec file or saved run that could not be read, one per line (nothing was written)."""

    def __init__(self, problems: list[str], exit_code: int):
        self.problems = problems
        self.exit_code = exit_code  # 2 when a spec file is at fault, 1 when only saved runs are
        super().__init__("\n".join(problems))


def collect(spec_paths: list[Path], results_dir: Path) -> list[SpecReport]:
    """Every spec's report; a bad spec file or run directory does not stop the others from being read,
    and all of them are named together at the end. Re-analysing the runs is most of a report's time, so it is
    shared among two forked processes where that is safe (see `_worker_processes`); the result is the same."""
    jobs = [(Path(path), Path(results_dir)) for path in spec_paths]
    workers = _worker_processes(len(jobs))
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            outcomes = pool.map(_collect_or_problem, jobs, chunksize=1)
    else:
        outcomes = [_collect_or_problem(job) for job in jobs]
    reports = [report for report, _, _ in outcomes if report is not None]
    problems = [problem for _, problem, _ in outcomes if problem is not None]
    if problems:
        raise ReportInputsError(problems, 2 if any(spec_fault for _, _, spec_fault in outcomes) else 1)
    return reports


def _worker_processes(jobs: int) -> int:
    """Two on a machine with two or more cores, else one. Only forked workers start fast enough to gain, and a
    fork is safe only before torch has started its thread pool (a forked child can hang on it), so a process
    that has imported torch (a test session) collects in one."""
    if jobs < 8 or (os.cpu_count() or 1) < 2 or "torch" in sys.modules:
        return 1
    return 2 if "fork" in multiprocessing.get_all_start_methods() else 1


def _collect_or_problem(job: tuple[Path, Path]) -> tuple[SpecReport | None, str | None, bool]:
    try:
        return _collect_one(*job), None, False
    except (SpecError, SavedRunError) as exc:
        return None, str(exc), isinstance(exc, SpecError)


def _collect_one(path: Path, results_dir: Path) -> SpecReport:
    run_dir = Path(results_dir) / path.stem
    saved = load_run(run_dir, path)
    spec = saved.current_spec if saved else load_spec(path, "paper")
    report = SpecReport(spec.name, spec, str(path), saved.run if saved else None)
    if saved is not None:
        report.notes.extend(saved.notes)
        report.analysis = analyze_saved(saved)
        report.notes.extend(report.analysis.notes)
        report.figures = sorted(p.name for p in (run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
        report.findings = list(report.analysis.findings)
    else:  # what a kind can say from the spec alone (its design against the reported numbers)
        analyzer, declared = kinds.analyzer(spec.kind), kinds.kind(spec.kind)
        report.notes.extend(analyzer.spec_notes(spec) if declared.spec_notes else [])
        report.findings = not_run_findings(spec, analyzer.CLAIM_CATALOGUE if declared.claim_catalogue else {})
    if report.findings:
        report.findings_table = findings_table(report.findings)
    report.expected_table = _expected_table(spec, report.analysis, report.run)
    return report


# A reports folder this command made holds this file; any other existing folder (or a file) is never replaced.
REPORTS_MARKER = ".harness-reports"


class OutFolderRefused(ValueError):
    """The --out target exists and is not a reports folder `harness report` made."""


def check_out_dir(out_dir: Path) -> None:
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise OutFolderRefused(f"{out_dir} exists and is not a folder; name a new folder or a reports folder this "
                               f"command made")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / REPORTS_MARKER).is_file():
        raise OutFolderRefused(f"{out_dir} holds files this command did not make (no {REPORTS_MARKER} marker); "
                               f"it is left alone: name a new or empty folder")


def build_reports(spec_paths: list[Path], results_dir: Path, out_dir: Path, profile: str | None = None,
                  only_run: bool = False) -> list[Path]:
    """Render every spec's page and the index into `out_dir`, replacing it atomically. Cross-spec pages take runs
    of one profile (`profile`, or the most common among the runs), so they never mix scales; with `only_run`,
    only the specs that have a run in `results_dir` get pages (a run place)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    if only_run:
        spec_paths = [p for p in spec_paths if (Path(results_dir) / Path(p).stem / "run.json").is_file()]
    reports = collect(sorted(spec_paths), results_dir)
    profiles = [r.run["profile"] for r in reports if r.run]
    profile = profile or (max(sorted(set(profiles)), key=profiles.count) if profiles else None)
    env = _environment()
    with exclusive(out_dir, "the reports folder"):
        restore_interrupted(out_dir)
        check_out_dir(out_dir)
        return _render(reports, env, results_dir, out_dir, profile, coverage=not only_run)


def _render(reports: list[SpecReport], env, results_dir: Path, out_dir: Path, profile: str | None,
            coverage: bool) -> list[Path]:
    stage = staging_dir(out_dir)
    try:
        written = []
        for report in reports:
            if report.figures:
                target = stage / "figures" / report.name
                target.mkdir(parents=True)
                for name in report.figures:
                    shutil.copy2(Path(results_dir) / report.name / "figures" / name, target / name)
            for ext in ("md", "tex"):
                text = env.get_template(f"spec.{ext}.j2").render(r=report, isnan=math.isnan)
                (stage / f"{report.name}.{ext}").write_text(text, encoding="utf-8")
                written.append(out_dir / f"{report.name}.{ext}")
        summaries, cross_spec = [], []
        for kind in sorted({r.spec.kind for r in reports}):
            summarizer = kinds.summarizer(kind)
            if summarizer is None:
                continue
            # a run of another profile than the page's is shown on its own page, never mixed into a cross-spec one
            entries = [r for r in reports if r.spec.kind == kind and (r.run is None or r.run["profile"] == profile)]
            name = f"{kind}_summary"
            pages = [(name, f"{kind}: across specs", *summarizer.summary(entries, stage / "figures" / name))]
            if kinds.kind(kind).summary_pages:  # further cross-spec pages (name, title, tables, notes, figures)
                pages += summarizer.pages(entries, stage / "figures")
            for name, title, tables, notes, figures in pages:
                figures = [f"figures/{name}/{Path(f).name}" for f in figures]
                summaries.append(name)
                cross_spec += [f for t in tables if isinstance(t, FindingsTable) for f in t.findings]
                for ext in ("md", "tex"):
                    text = env.get_template(f"summary.{ext}.j2").render(kind=kind, title=title, name=name, tables=tables,
                                                                         notes=notes, figures=figures)
                    (stage / f"{name}.{ext}").write_text(text, encoding="utf-8")
                    written.append(out_dir / f"{name}.{ext}")
        others = [r.name for r in reports if r.run and r.run["profile"] != profile]
        every = sorted([f for r in reports for f in r.findings] + cross_spec, key=lambda f: (f.report, f.subject))
        page = findings_table(every, "Every claim of the reports, one row each", subject=True)
        for ext in ("md", "tex"):
            text = env.get_template(f"findings.{ext}.j2").render(table=page, counts=_verdict_counts(every),
                                                               profile=profile)
            (stage / f"findings.{ext}").write_text(text, encoding="utf-8")
            written.append(out_dir / f"findings.{ext}")
        (stage / RULES_PAGE).write_text(env.get_template("verdict_rules.md.j2").render(rules=RULES), encoding="utf-8")
        written.append(out_dir / RULES_PAGE)
        if coverage:  # the registry's coverage of the seed reports; a run place's pages leave it out
            (stage / "coverage.md").write_text(env.get_template("coverage.md.j2").render(rows=seed_sections()),
                                               encoding="utf-8")
            written.append(out_dir / "coverage.md")
        rows = [_index_row(r) for r in reports]
        (stage / "README.md").write_text(env.get_template("index.md.j2").render(reports=reports, rows=rows,
                                                                                summaries=summaries, profile=profile,
                                                                                others=others, coverage=coverage,
                                                                                counts=_verdict_counts(every)),
                                         encoding="utf-8")
        (stage / REPORTS_MARKER).write_text("Made by `harness report`; it replaces this folder as a whole.\n",
                                            encoding="utf-8")
        written.append(out_dir / "README.md")
        replace_dir(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return written


def _verdict_counts(findings: list) -> list[tuple[str, int]]:
    counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
    return [(v, n) for v, n in counts.items() if n]


def _verdict_anchor(verdict: str) -> str:
    from harness.claims import ANCHORS

    return ANCHORS[verdict]


def _index_row(report: SpecReport) -> dict:
    """A spec's line on the index: its headline metric (the kind's first) and how its claims came out."""
    headline, value = None, None
    if report.analysis is not None:
        for key in kinds.analyzer(report.spec.kind).headline_metrics(report.spec):
            if key in report.analysis.metrics:
                headline, value = key, report.analysis.metrics[key]
                break
    counts = ", ".join(f"{n} {v}" for v, n in _verdict_counts(report.findings))
    return {"headline": headline, "value": value, "verdicts": counts or "—"}
