"""Evidence that nothing can clobber and caches that cannot run code: unsafe checkpoints, run places apart from the
committed results, reports folders this command made, honest interrupts, locks on every writer, one-line errors for
damaged or hostile input, and the pinned environment."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import MINIMAL_RESIDUAL, REPO, one_line_error, pending_stages
from harness.fsutil import Interrupted, RunLocked, exclusive, replace_dir, staging_dir

SST2 = REPO / "specs" / "sst2_8tok.yaml"
RESIDUAL = REPO / "specs" / "residual_gain_local.yaml"


def _harness(*args, cwd=REPO, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# ---------------------------------------------------------------- 1. a planted checkpoint never runs

class _Payload:
    """Unpickling this writes a file: the proof that a checkpoint's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def _plant(path: Path, marker: Path) -> None:
    torch.save({"step": 1, "log": [{}], "module": _Payload(marker)}, path)


def test_a_planted_bridge_checkpoint_is_discarded_without_running(tmp_path):
    from harness.kinds.bridge.training import train
    from registry.kinds.bridge import TrainingSpec

    marker = tmp_path / "ran.txt"
    _plant(tmp_path / "bridge.pt", marker)
    module = nn.Linear(3, 1)
    data = torch.randn(8, 3)

    def loss(step):
        value = step.item_mean(module(data[step.local]).pow(2).mean())
        return {"total": value, "lm": value}

    spec = TrainingSpec(steps=2, batch_size=4, warmup_steps=0, checkpoint_every=1, quick_eval_every=100)
    with pytest.warns(UserWarning, match=r"discarded a corrupt checkpoint.*bridge\.pt"):
        result = train(module, loss, n_items=8, steps=2, spec=spec, lr=0.1, seed=0, checkpoint=tmp_path / "bridge.pt",
                       label="bridge")
    assert not marker.exists()
    assert result.status["status"] == "trained" and "bridge.pt" in result.status["discarded_checkpoint"]


def test_a_planted_pretraining_checkpoint_is_discarded_with_a_warning_without_running(tmp_path):
    from types import SimpleNamespace

    from harness.context import Processes
    from harness.kinds.halflife.pretrain import checkpoint_name, pretrain
    from harness.models import load_model
    from registry import load_spec

    spec = load_spec(REPO / "specs" / "halflife_toy_trained_local.yaml", "tiny")
    lm = load_model(spec.model, "tiny", cache_dir=tmp_path, device=torch.device("cpu"))
    marker = tmp_path / "ran.txt"
    _plant(tmp_path / checkpoint_name(0), marker)
    texts = [{"text": "a short news text about markets and sports " * 4, "id": str(i)} for i in range(8)]
    ctx = SimpleNamespace(state_dir=tmp_path, items=lambda *a, **k: texts, processes=Processes(),
                          progress=lambda **k: __import__("tqdm").tqdm(disable=True))
    with pytest.warns(UserWarning, match="discarded a corrupt pretraining checkpoint"):
        _, status = pretrain(spec, lm, ctx, 0)
    assert not marker.exists() and status["status"] == "trained" and "discarded_checkpoint" in status


def test_nothing_in_the_project_unpickles():
    """Every torch.load passes weights_only=True; no pickle, no joblib, no numpy allow_pickle anywhere."""
    offenders = []
    for path in [*REPO.glob("harness/**/*.py"), *REPO.glob("registry/**/*.py"), *REPO.glob("benchmarks/*.py")]:
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(REPO)}: {call}")
        for pattern in (r"\bimport pickle\b", r"\bpickle\.load", r"allow_pickle=True", r"\bjoblib\b", r"\bdill\b"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(REPO)}: {pattern}")
    assert not offenders, offenders


# ---------------------------------------------------------------- 2. runs that are not the pipeline's go elsewhere

def test_only_the_pipelines_own_runs_write_the_committed_results():
    from harness.places import PIPELINE_RESULTS, results_dir_for
    from registry.errors import SpecError

    assert results_dir_for("local", (), None, None, "local") == (PIPELINE_RESULTS, None)
    folder, place = results_dir_for("tiny", (), None, None, "local", Path("runs"))
    assert place is not None and folder == place / "results" and place.parent == Path("runs")
    folder, place = results_dir_for("local", ("training.seeds=[0]",), None, None, "local", Path("runs"))
    assert place is not None and place.name.endswith("-local-" + place.name.rsplit("-", 1)[-1])
    assert results_dir_for("local", (), None, "mine", "local", Path("runs")) == (Path("runs/mine/results"),
                                                                                 Path("runs/mine"))
    assert results_dir_for("tiny", (), Path("/tmp/x"), None, "local") == (Path("/tmp/x"), None)
    with pytest.raises(SpecError, match="holds the pipeline's committed local results"):
        results_dir_for("tiny", (), Path("results"), None, "local")
    with pytest.raises(SpecError, match="--run-id"):
        results_dir_for("local", (), None, "../escape", "local")


def _digest_tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_tiny_run_of_a_committed_spec_leaves_results_and_reports_alone(tmp_path):
    """docs/adding-an-experiment.md, step 3 (a tiny run of a spec that has committed local results)."""
    before = {name: _digest_tree(REPO / name / "sst2_8tok") if name == "results" else _digest_tree(REPO / name)
              for name in ("results", "reports")}
    env = {"HARNESS_CACHE_DIR": str(tmp_path / "cache"), "HARNESS_RUNS_DIR": str(tmp_path / "runs")}
    result = _harness("run", "specs/sst2_8tok.yaml", "--profile", "tiny", "--quiet", "--run-id", "check", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    place = tmp_path / "runs" / "check"
    assert (place / "results" / "sst2_8tok" / "metrics.json").is_file()
    assert f"harness report --run {place}" in result.stdout
    report = _harness("report", "--run", str(place), env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (place / "reports" / "sst2_8tok.md").is_file() and not (place / "reports" / "trec_16tok.md").exists()
    assert _digest_tree(REPO / "results" / "sst2_8tok") == before["results"]
    assert _digest_tree(REPO / "reports") == before["reports"]
    status = subprocess.run(["git", "status", "--porcelain", "--", "results", "reports"], cwd=REPO,
                            capture_output=True, text=True)
    assert status.returncode != 0 or status.stdout == ""


def test_cross_spec_pages_never_mix_profiles(tmp_path):
    """A tiny run sitting in a results folder of local runs gets its own page, never a row in the bridge summary."""
    from harness.report.render import build_reports

    results = tmp_path / "results"
    for name in ("sst2_8tok", "trec_16tok"):
        shutil_copy(REPO / "results" / name, results / name)
    tiny = json.loads((results / "trec_16tok" / "run.json").read_text())
    tiny["profile"] = "tiny"
    (results / "trec_16tok" / "run.json").write_text(json.dumps(tiny))
    build_reports([SST2, REPO / "specs" / "trec_16tok.yaml"], results, tmp_path / "out", profile="local")
    summary = (tmp_path / "out" / "bridge_summary.md").read_text()
    master = summary.split("## Master table")[1].split("\n## ")[0] if "## Master table" in summary else summary
    assert "| sst2 |" in master and "| trec |" not in master
    assert "trec_16tok" in (tmp_path / "out" / "README.md").read_text().split("left out of the cross-spec pages")[1]


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


# ---------------------------------------------------------------- 3. report --out never deletes what it did not make

@pytest.mark.parametrize("target", ["folder", "file", "dot"])
def test_report_refuses_an_out_target_it_did_not_make(tmp_path, target):
    if target == "folder":
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif target == "file":
        out = tmp_path / "mine.txt"
        out.write_text("keep me")
    else:
        out = Path(".")
    cwd = tmp_path if target == "dot" else REPO
    if target == "dot":
        (tmp_path / "notes.txt").write_text("keep me")
        for item in ("specs", "params.yaml", "dvc.yaml"):
            src = REPO / item
            (tmp_path / item).symlink_to(src, target_is_directory=src.is_dir())
    result = _harness("report", "--results-dir", str(tmp_path / "none"), "--out", str(out), cwd=cwd)
    assert "did not make" in one_line_error(result, 2) or "not a folder" in result.stderr
    kept = tmp_path / ("notes.txt" if target == "dot" else "mine/notes.txt" if target == "folder" else "mine.txt")
    assert kept.read_text() == "keep me"


def test_report_replaces_a_reports_folder_it_made(tmp_path):
    from harness.report.render import REPORTS_MARKER, build_reports

    out = tmp_path / "out"
    build_reports([RESIDUAL], REPO / "results", out)
    assert (out / REPORTS_MARKER).is_file()
    build_reports([RESIDUAL], REPO / "results", out)  # its own folder: replaced
    assert (out / "residual_gain_local.md").is_file()


# ---------------------------------------------------------------- 4. interrupts say what is true

def _saved_run(tmp_path) -> Path:
    results = tmp_path / "results"
    shutil_copy(REPO / "results" / "residual_gain_local", results / "residual_gain_local")
    return results


def test_an_interrupted_analysis_leaves_the_previous_analysis_and_says_so(tmp_path, monkeypatch):
    from harness import analyze, kinds

    results = _saved_run(tmp_path)
    run_dir = results / "residual_gain_local"
    before = _digest_tree(run_dir)

    class Stop:
        @staticmethod
        def figures(*args):
            raise KeyboardInterrupt

    monkeypatch.setattr(kinds, "figure_maker", lambda kind: Stop)
    with pytest.raises(Interrupted, match="is untouched"):
        analyze.analyze_run(RESIDUAL, results)
    assert _digest_tree(run_dir) == before
    assert not list(results.glob(".residual_gain_local.staging-*"))


def test_an_interrupted_run_says_the_folder_is_untouched(tmp_path, monkeypatch):
    from harness import engine, kinds

    results = _saved_run(tmp_path)
    before = _digest_tree(results / "residual_gain_local")

    class Stop:
        @staticmethod
        def run(spec, ctx):
            raise KeyboardInterrupt

    monkeypatch.setattr(kinds, "executor", lambda kind: Stop)
    settings = engine.RunSettings(profile="tiny", results_dir=results, cache_dir=tmp_path / "cache", device="cpu",
                                  show_progress=False)
    with pytest.raises(Interrupted, match="is untouched and holds its previous complete run"):
        engine.run_spec(RESIDUAL, settings)
    assert _digest_tree(results / "residual_gain_local") == before


def test_a_swap_is_never_cut_between_its_two_renames(tmp_path, monkeypatch):
    """Ctrl-C arriving between the renames is held until both are done, then raised."""
    from harness import fsutil

    final = tmp_path / "run"
    final.mkdir()
    (final / "a").write_text("old")
    stage = staging_dir(final)
    (stage / "a").write_text("new")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives after the first rename
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    # Python's own Ctrl-C handler, as at a terminal: a test run started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            replace_dir(stage, final)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (final / "a").read_text() == "new" and len(calls) == 2


def test_dvc_keeps_every_stage_output_until_the_command_replaces_it():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in ("outs", "metrics"):
            for out in stage.get(key, []):
                (path, flags), = out.items()
                assert flags == {"cache": False, "persist": True}, (name, path)


# ---------------------------------------------------------------- 5. every writer holds the run directory's lock

def test_analyze_waits_for_nobody_and_refuses_while_a_run_holds_the_directory(tmp_path):
    from harness.analyze import analyze_run

    results = _saved_run(tmp_path)
    with exclusive(results / "residual_gain_local", "the run directory"):
        with pytest.raises(RunLocked, match="in use by another run"):
            analyze_run(RESIDUAL, results)


def test_a_linked_run_directory_keeps_working(tmp_path):
    from harness.analyze import analyze_run

    real = _saved_run(tmp_path)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "residual_gain_local").symlink_to(real / "residual_gain_local", target_is_directory=True)
    for _ in range(3):
        analyze_run(RESIDUAL, linked)
    assert (linked / "residual_gain_local").is_symlink()
    assert (real / "residual_gain_local" / "metrics.json").is_file()
    assert not [p for p in linked.iterdir() if p.name.startswith(".residual_gain_local.previous")]


def test_runs_into_a_linked_run_directory_keep_working(tmp_path):
    """A run folder that is a link (results kept on another disk): the second run replaced the link's target
    through a `.previous` link and then failed with 'Not a directory' after all the compute."""
    from harness.engine import RunSettings, run_spec

    target, runs = tmp_path / "elsewhere", tmp_path / "runs"
    target.mkdir()
    runs.mkdir()
    (runs / "residual_gain_paper").symlink_to(target, target_is_directory=True)
    settings = RunSettings(profile="tiny", results_dir=runs, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False)
    for _ in range(3):
        run_spec(REPO / "specs" / "residual_gain_paper.yaml", settings)
    assert (runs / "residual_gain_paper").is_symlink() and (target / "records.jsonl").is_file()
    assert sorted(p.name for p in runs.iterdir()) == ["residual_gain_paper"]


# ---------------------------------------------------------------- 6. one line, not a traceback

def test_a_curves_file_cut_mid_row_is_one_line(tmp_path):
    results = _saved_run(tmp_path)
    curves = results / "residual_gain_local" / "curves.csv"
    text = curves.read_text()
    curves.write_text(text[: text.rindex(",", 0, len(text) // 2)])
    result = _harness("analyze", str(RESIDUAL), "--results-dir", str(results))
    assert "curves.csv: unreadable (line" in one_line_error(result, 1)


def test_yaml_nested_too_deeply_is_one_line_everywhere(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text(MINIMAL_RESIDUAL + "tags: " + "[" * 900 + "]" * 900 + "\n")
    validated = _harness("validate", str(deep))
    assert validated.returncode == 2 and "Traceback" not in validated.stderr
    assert validated.stderr.splitlines()[0].endswith("nested more than 64 levels deep")
    for args in (("run", str(deep), "--profile", "tiny", "--results-dir", str(tmp_path / "r")),
                 ("run", str(RESIDUAL), "--profile", "tiny", "--results-dir", str(tmp_path / "r"),
                  "--set", "tags=" + "[" * 900 + "]" * 900)):
        assert "nested more than" in one_line_error(_harness(*args), 2)


# ---------------------------------------------------------------- 7. inputs that reach too far

@pytest.mark.parametrize("where", ["/etc/passwd", "../../../../../../etc/passwd"])
def test_a_prompts_file_outside_the_spec_folder_is_refused_unread(tmp_path, where):
    spec = REPO / "specs" / "tre_sweep_smollm2_local.yaml"
    result = _harness("run", str(spec), "--profile", "tiny", "--results-dir", str(tmp_path), "--set",
                      f"prompts_file={where}")
    line = one_line_error(result, 2)
    assert "outside the spec's folder" in line and "root:" not in line


def test_error_lines_are_cut_and_spec_files_are_bounded(tmp_path):
    huge = "x" * 100_000
    result = _harness("run", str(RESIDUAL), "--profile", "tiny", "--results-dir", str(tmp_path), "--set",
                      f"seed={huge}")
    assert len(one_line_error(result, 2)) < 1000
    big = tmp_path / "big.yaml"
    big.write_text(RESIDUAL.read_text() + "# " + "y" * (2 << 20) + "\n")
    validated = _harness("validate", str(big))
    assert validated.returncode == 2 and "spec files are limited to" in validated.stderr.splitlines()[0]


def test_markdown_pages_pass_no_html_links_or_script_urls():
    from harness.report.render import md_escape

    text = md_escape("<script>alert(1)</script> [x](javascript:alert(1)) <a href='file:///etc/passwd'>y</a> p < 0.05")
    assert "<script" not in text and "<a " not in text and "](" not in text
    assert "javascript:" not in text and "file:" not in text and "p < 0.05" in text
    assert md_escape("unsupported by the report's own data: p 0.39") == "unsupported by the report's own data: p 0.39"


# ---------------------------------------------------------------- 8. damaged runs are refused, by name

def test_an_empty_records_file_is_refused(tmp_path):
    results = _saved_run(tmp_path)
    (results / "residual_gain_local" / "records.jsonl").write_text("")
    result = _harness("analyze", str(RESIDUAL), "--results-dir", str(results))
    assert "holds no records" in one_line_error(result, 1)


def test_a_damaged_records_line_is_named_by_its_line_number(tmp_path):
    results = _saved_run(tmp_path)
    records = results / "residual_gain_local" / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    lines[6] = lines[6][: len(lines[6]) // 2] + "\n"
    records.write_text("".join(lines))
    assert "records.jsonl: unreadable (line 7:" in one_line_error(
        _harness("analyze", str(RESIDUAL), "--results-dir", str(results)), 1)


def test_list_refuses_another_specs_run_and_report_refuses_a_run_whose_spec_is_not_a_spec(tmp_path):
    results = _saved_run(tmp_path)
    shutil_copy(results / "residual_gain_local", results / "sst2_8tok")
    assert "records a run of 'residual_gain_local'" in one_line_error(_harness("list", "--results-dir", str(results)), 1)
    run_file = results / "residual_gain_local" / "run.json"
    run = json.loads(run_file.read_text())
    run["spec"] = ["not", "a", "spec"]
    run_file.write_text(json.dumps(run))
    result = _harness("analyze", str(RESIDUAL), "--results-dir", str(results))
    assert "its `spec` is not the spec of 'residual_gain_local'" in one_line_error(result, 1)


# ---------------------------------------------------------------- 9. no litter, shared modes

def test_staging_litter_is_cleaned_and_results_are_readable_by_others(tmp_path):
    from harness.analyze import analyze_run

    results = _saved_run(tmp_path)
    litter = staging_dir(results / "residual_gain_local")  # a `kill -9` mid-analysis leaves one
    (litter / "half.png").write_bytes(b"x")
    old_style = results / "residual_gain_local" / ".figures.staging-abc"  # and older versions left these inside
    old_style.mkdir()
    old = os.umask(0o022)
    try:
        analyze_run(RESIDUAL, results)
        fresh = staging_dir(tmp_path / "made")
    finally:
        os.umask(old)
    assert not litter.exists() and not old_style.exists()
    run_dir = results / "residual_gain_local"
    assert (run_dir.stat().st_mode & 0o777) == 0o755 and (fresh.stat().st_mode & 0o777) == 0o755
    assert ((run_dir / "metrics.json").stat().st_mode & 0o777) == 0o644


# ---------------------------------------------------------------- 10. a pinned environment

def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_both_readme_commands_install_from_the_lock():
    commands = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    installs = [line for line in commands.splitlines() if re.search(r"pip install .*-e ", line)]
    assert len(installs) == 2 and all("pip install -c constraints.txt -e " in line for line in installs)
    pins = _pins()
    assert pins.get("torch") == "2.13.0" and "transformers" in pins and "statsmodels" in pins


def test_the_committed_runs_were_made_with_the_locked_versions():
    from harness.engine import TRACKED_PACKAGES

    pins = _pins()
    pending = pending_stages()
    for run_file in sorted((REPO / "results").glob("*/run.json")):
        if f"run-{run_file.parent.name}" in pending:
            continue  # made before the lock; declared for rerun in stages_not_run.yaml
        versions = json.loads(run_file.read_text())["versions"]
        for package in TRACKED_PACKAGES:
            name = re.sub(r"[-_.]+", "-", package).lower()
            if package in versions and name in pins:
                recorded = versions[package].split("+")[0]
                assert recorded == pins[name], f"{run_file.parent.name}: {package} {versions[package]} vs {pins[name]}"


# ---------------------------------------------------------------- the smaller findings

@pytest.mark.slow
def test_random_prompts_and_held_out_texts_are_recorded_and_curves_are_written(tmp_path):
    from harness.engine import RunSettings, run_spec
    from harness.fsutil import read_csv_rows, read_jsonl
    from harness.kinds.halflife.executor import prompt_ids
    from registry import load_spec

    settings = RunSettings(profile="tiny", results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu",
                           show_progress=False)
    run_dir = run_spec(REPO / "specs" / "halflife_toy.yaml", settings).run_dir
    records = read_jsonl(run_dir / "records.jsonl")
    firsts = [r for r in records if r["chunk"] == 0 and r["index"] == 0]
    spec = load_spec(REPO / "specs" / "halflife_toy.yaml", "tiny")
    assert firsts and all(r["prompt_tokens"] == prompt_ids(spec, spec.prompts[0], None, 1000, r["seed"]) for r in firsts)
    assert len(read_csv_rows(run_dir / "curves.csv")) > 0  # per chunk and layer: routing entropy and top-1 usage
    run_dir = run_spec(REPO / "specs" / "alignment_procrustes_local.yaml", settings).run_dir
    (calibration,) = [r for r in read_jsonl(run_dir / "records.jsonl") if r["record"] == "calibration"]
    assert calibration["fit_ids"] and calibration["heldout_ids"]
    assert not set(calibration["fit_ids"]) & set(calibration["heldout_ids"])


def test_the_cache_folder_help_shows_the_environment_and_runs_print_no_deprecation(tmp_path):
    shown = _harness("run", "--help", env={"HARNESS_CACHE_DIR": str(tmp_path / "mine")})
    assert str(tmp_path / "mine") in shown.stdout.replace("\n", "").replace(" ", "") or \
        str(tmp_path / "mine") in shown.stdout
    result = _harness("run", str(RESIDUAL), "--profile", "tiny", "--quiet", "--results-dir", str(tmp_path / "r"),
                      "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "past_key_values" not in result.stderr and "%|" not in result.stderr  # no warning, no progress bar
