"""Reports are rendered from records (not from metrics.json), in Markdown and booktabs LaTeX."""

import json
import shutil

from conftest import REPO
from harness.report.render import build_reports, md_escape, tex_escape
from registry.loader import spec_files


def _render(tmp_path, results_dir):
    out = tmp_path / "reports"
    build_reports(spec_files([REPO / "specs"]), results_dir, out)
    return out


def test_reports_render_every_spec_with_reported_and_reproduced(tiny_paper_run, tmp_path):
    out = _render(tmp_path, tiny_paper_run.run_dir.parent)
    names = {p.stem for p in (REPO / "specs").glob("*.yaml")}
    summaries = {"bridge_summary", "gsm8k_lineage", "alignment_summary"}  # kinds with a `summary` module (and its pages)
    cross = {"findings"}  # every verdict of every page in one table; verdict_rules.md states the rules once
    # coverage.md: which seed sections are specs (registry/seed_sections.yaml), Markdown only
    assert {p.stem for p in out.glob("*.md")} == names | {"README", "verdict_rules", "coverage"} | summaries | cross
    assert {p.stem for p in out.glob("*.tex")} == names | summaries | cross
    page = (out / "residual_gain_paper.md").read_text()
    assert "Run: profile **tiny**" in page
    assert "### Reported vs reproduced" in page and "whose models differ" in page
    row = next(line for line in page.splitlines() if line.startswith("| llama31_8b.last_gain_pre_norm.capital_france |"))
    metrics = json.loads((tiny_paper_run.run_dir / "metrics.json").read_text())
    assert "| 0.48 |" in row and f"| {metrics['llama31_8b.last_gain_pre_norm.capital_france']:,.4g} |" in row
    assert (out / "figures" / "residual_gain_paper" / "norms_per_layer.png").is_file()
    assert "![norms_per_layer.png](figures/residual_gain_paper/norms_per_layer.png)" in page
    # a spec without a result still gets a page with the report's numbers
    local_page = (out / "residual_gain_local.md").read_text()
    assert "Not run yet" in local_page
    index = (out / "README.md").read_text()
    assert "| residual_gain_paper | residual_gain |" in index and "| residual_gain_local | residual_gain |" in index


def test_latex_is_booktabs_and_escaped(tiny_paper_run, tmp_path):
    tex = (_render(tmp_path, tiny_paper_run.run_dir.parent) / "residual_gain_paper.tex").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") >= 5
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"llama31\_8b.last\_gain\_pre\_norm.capital\_france" in tex
    assert r"$\sigma$\_max(W\_U)" in tex
    assert "σ" not in tex and "θ" not in tex
    assert tex_escape("50% & $x_1$ #2") == r"50\% \& \$x\_1\$ \#2"
    assert md_escape("a|b") == "a\\|b"


def test_statistics_are_recomputed_from_records(tiny_paper_run, tmp_path):
    """Editing records.jsonl (a re-scored run) changes the tables without running models."""
    results = tmp_path / "results"
    shutil.copytree(tiny_paper_run.run_dir, results / tiny_paper_run.run_dir.name)
    records_path = results / tiny_paper_run.run_dir.name / "records.jsonl"
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    for record in records:
        if record["model"] == "llama2_7b":
            record["norms_last"][-1] = record["norms_last"][-2] * 7.25  # last-layer gain becomes 7.25
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    page = (_render(tmp_path, results) / "residual_gain_paper.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| LLaMA-2-7B | RMSNorm | SwiGLU |"))
    assert "| 7.25 | 7.25–7.25 | yes |" in row


def test_a_page_not_run_yet_states_what_the_spec_alone_implies(tmp_path):
    """TRE: the joint-attainability verdict and the design consequences need no run (issue: paper pages)."""
    specs = [REPO / "specs" / f"tre_sweep_deepseek_r1_llama70b{suffix}.yaml" for suffix in ("", "_reconstructed")]
    build_reports(specs, tmp_path / "no_results", tmp_path / "out")
    plain = (tmp_path / "out" / "tre_sweep_deepseek_r1_llama70b.md").read_text()
    assert "Not run yet" in plain
    assert "imply signal levels 0.585 / 0.893 / 0.772" in plain and "cannot be met jointly" in plain
    assert "typical signal already gives top_p 0.925 > 0.9 and top_k 35 < 50" in plain
    reconstructed = (tmp_path / "out" / "tre_sweep_deepseek_r1_llama70b_reconstructed.md").read_text()
    assert "confirm nothing" in reconstructed and "cannot be met jointly" not in reconstructed


def test_the_residual_gain_paper_page_says_last_gain_is_undefined_before_any_run(tmp_path):
    build_reports([REPO / "specs" / "residual_gain_paper.yaml"], tmp_path / "no_results", tmp_path / "out")
    page = (tmp_path / "out" / "residual_gain_paper.md").read_text()
    assert "Not run yet" in page and '"Last Gain" is not defined in the report' in page
