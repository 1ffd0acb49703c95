"""results/ + specs/ -> reports/*.md and reports/*.tex (booktabs), with figures.

Statistics are recomputed from each run's records.jsonl with the executor's `analyze`, so
a saved run can be re-analysed after the analysis code improves, without running models.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness.experiments import executor_for
from harness.fsutil import read_csv_rows, read_jsonl, replace_dir, staging_dir
from harness.report.tables import Analysis, Column, Table, format_cell
from registry import load_spec
from registry.errors import SpecError
from registry.kinds import SPEC_ADAPTER

_TEX_REPLACEMENTS = [
    ("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
    ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
    ("σ", r"$\sigma$"), ("θ", r"$\theta$"), ("ρ", r"$\rho$"), ("→", r"$\rightarrow$"), ("‖", r"$\|$"),
    ("×", r"$\times$"), ("≥", r"$\geq$"), ("≤", r"$\leq$"), ("±", r"$\pm$"), ("—", "---"), ("–", "--"),
    ("Δ", r"$\Delta$"), ("α", r"$\alpha$"),
]


def tex_escape(text) -> str:
    text = str(text)
    out = []
    for char in text:
        out.append(next((rep for src, rep in _TEX_REPLACEMENTS if src == char), char))
    return "".join(out)


def md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tex"] = tex_escape
    env.filters["md"] = md_escape
    env.filters["cell"] = format_cell
    return env


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


def _expected_table(spec, analysis: Analysis | None, run: dict | None) -> Table | None:
    if not spec.expected:
        return None
    profile = run["profile"] if run else None
    table = Table("expected", "Reported vs reproduced", [
        Column("Metric", align="l"), Column("Reported"), Column("Reproduced"), Column("Ratio", ".2f"),
        Column("Section", align="l"), Column("Note", align="l")],
        caption=("Reported values come from the report's models (paper profile). "
                 + ("Not run yet." if run is None else f"This run used the {profile} profile"
                    + ("." if profile == "paper" else ", whose models differ, so the columns are not expected to agree."))))
    for exp in spec.expected:
        got = None
        if analysis is not None:
            got = analysis.metrics.get(exp.metric, analysis.facts.get(exp.metric))
        ratio = got / exp.value if isinstance(got, float) and isinstance(exp.value, float) and exp.value else None
        reported = exp.value if isinstance(exp.value, str) else format_cell(exp.value, ",.4g")
        reproduced = got if isinstance(got, str) or got is None else format_cell(got, ",.4g")
        table.add(exp.metric, reported, reproduced if run else "not run", ratio, exp.section, exp.note)
    return table


def collect(spec_paths: list[Path], results_dir: Path) -> list[SpecReport]:
    reports = []
    for path in spec_paths:
        run_dir = Path(results_dir) / path.stem
        run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None
        spec = load_spec(path, run["profile"] if run else "paper")
        report = SpecReport(spec.name, spec, str(path), run)
        if run is not None:
            try:
                run_spec = SPEC_ADAPTER.validate_python(run["spec"])
            except Exception:
                run_spec = spec
                report.notes.append("The run's recorded spec no longer validates; analysed with the current spec file.")
            if run_spec.model_dump(mode="json") != spec.model_dump(mode="json"):
                report.notes.append("The spec file changed after this run; the tables describe the run as it was made.")
            records = read_jsonl(run_dir / "records.jsonl")
            curves = read_csv_rows(run_dir / "curves.csv") if (run_dir / "curves.csv").is_file() else []
            report.analysis = executor_for(spec.kind).analyze(run_spec, records, curves)
            report.notes.extend(report.analysis.notes)
            report.figures = sorted(p.name for p in (run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
        report.expected_table = _expected_table(spec, report.analysis, run)
        reports.append(report)
    return reports


def build_reports(spec_paths: list[Path], results_dir: Path, out_dir: Path) -> list[Path]:
    """Render every spec's page and the index into `out_dir`, replacing it atomically."""
    reports = collect(sorted(spec_paths), results_dir)
    env = _environment()
    out_dir = Path(out_dir)
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
        summaries = []
        for kind in sorted({r.spec.kind for r in reports}):
            executor = executor_for(kind)
            if not hasattr(executor, "summary"):
                continue
            name = f"{kind}_summary"
            tables, notes, figures = executor.summary([r for r in reports if r.spec.kind == kind], stage / "figures" / name)
            figures = [f"figures/{name}/{Path(f).name}" for f in figures]
            summaries.append(name)
            for ext in ("md", "tex"):
                text = env.get_template(f"summary.{ext}.j2").render(kind=kind, name=name, tables=tables, notes=notes,
                                                                     figures=figures)
                (stage / f"{name}.{ext}").write_text(text, encoding="utf-8")
                written.append(out_dir / f"{name}.{ext}")
        (stage / "README.md").write_text(env.get_template("index.md.j2").render(reports=reports, summaries=summaries),
                                         encoding="utf-8")
        written.append(out_dir / "README.md")
        replace_dir(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return written


def spec_files(paths: list[Path]) -> list[Path]:
    """YAML files named directly or found (non-recursively) in the given folders."""
    found = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found += sorted(p for p in path.glob("*.yaml"))
        elif path.is_file():
            found.append(path)
        else:
            raise SpecError("no such file or folder", str(path))
    return found
