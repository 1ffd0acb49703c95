"""The analysis stage: a run directory's records -> metrics.json and figures/, without models.

It reads only what the run stage wrote (records.jsonl, run.json, curves.csv) and analyses it with
the spec as it was run (recorded in run.json), so `dvc repro` reruns it, and not the models, when
analysis or figure code changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import kinds
from harness.fsutil import (Interrupted, exclusive, read_csv_rows, read_jsonl, real_dir, replace_dir,
                            restore_interrupted, staging_dir, write_json)
from harness.kinds.contract import Analysis
from registry import load_spec
from registry.documentation import DOCUMENTATION_FIELDS, without_documentation
from registry.errors import SpecError
from registry.kinds import validate_spec


FIGURE_MANIFEST = "FIGURES.txt"


@dataclass
class SavedRun:
    run: dict
    records: list[dict]
    curves: list[dict]
    spec: object  # the spec as it was run
    current_spec: object  # the spec file as it is now, under the run's profile
    notes: list[str]


def load_run(run_dir: Path, spec_path: Path) -> SavedRun | None:
    """A run directory's files, or None if it holds no complete run. The run is analysed with the spec
    recorded in run.json, its documentation fields (description, source, tags, expected) taken from the spec
    file as it is now (under the run's profile); the rest of the file is compared with the recorded spec."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or not (run_dir / "records.jsonl").is_file():
        return None
    run = read_saved(run_dir / "run.json", lambda p: json.loads(p.read_text(encoding="utf-8")))
    if not isinstance(run, dict) or not {"name", "profile", "spec"} <= set(run):
        raise SavedRunError(f"{run_dir / 'run.json'}: not a run record (it needs name, profile and spec)")
    if run["name"] != Path(spec_path).stem:
        raise SavedRunError(f"{run_dir / 'run.json'}: records a run of {run['name']!r}, not of {spec_path}")
    recorded = run["spec"]
    if not isinstance(recorded, dict) or recorded.get("name") != run["name"] or not isinstance(recorded.get("kind"), str):
        raise SavedRunError(f"{run_dir / 'run.json'}: its `spec` is not the spec of {run['name']!r} (it needs the "
                            f"spec's name and kind); rerun the spec to rewrite it")
    current_spec = load_spec(spec_path, run["profile"])
    if recorded["kind"] != current_spec.kind:
        raise SavedRunError(f"{run_dir / 'run.json'}: records a {recorded['kind']} run, but {spec_path} is a "
                            f"{current_spec.kind} spec; rerun the spec")
    notes = []
    try:
        spec = validate_spec(recorded)
    except Exception:  # the spec model gained a required field or lost one since: the file's spec is the run's
        spec = current_spec
        notes.append("The run's recorded spec no longer validates; analysed with the current spec file.")
    # What the report says about the experiment is the spec file's as it is now (editing it reruns no model)
    spec = spec.model_copy(update={field: getattr(current_spec, field) for field in DOCUMENTATION_FIELDS})
    if without_documentation(spec.model_dump(mode="json")) != without_documentation(current_spec.model_dump(mode="json")):
        if run.get("overrides"):
            notes.append("This run used --set overrides (" + ", ".join(run["overrides"]) + "); the tables describe "
                         "the run as it was made, not the spec file as written.")
        else:
            notes.append("The spec file changed after this run; the tables describe the run as it was made.")
    curves_file = run_dir / "curves.csv"
    curves = read_saved(curves_file, read_csv_rows) if curves_file.is_file() else []
    records = read_saved(run_dir / "records.jsonl", read_jsonl)
    if not records:
        raise SavedRunError(f"{run_dir / 'records.jsonl'}: holds no records (an empty or cut file); rerun the spec "
                            f"to rewrite it")
    return SavedRun(run, records, curves, spec, current_spec, notes)


class SavedRunError(RuntimeError):
    """A run directory's file is unreadable or belongs to another spec."""


def read_saved(path: Path, read):
    """`read(path)`, with any unreadable file turned into one SavedRunError line naming it."""
    try:
        return read(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # json/csv errors are ValueErrors
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SavedRunError(f"{path}: unreadable ({first}); rerun the spec to rewrite it") from None


def analyze_saved(saved: SavedRun) -> Analysis:
    return kinds.analyzer(saved.spec.kind).analyze(saved.spec, saved.records, saved.curves)


def analyze_run(spec_path: Path, results_dir: Path, name: str | None = None) -> Analysis:
    """Write results/<name>/metrics.json and results/<name>/figures/ from the saved run of `spec_path`
    (`name`: the spec's name, by default read from the spec file). Under the run directory's lock, the new
    analysis is built beside the run and swapped in with the run's own files in one rename: an interrupt leaves
    the previous analysis or the new one, never metrics from one and figures from the other."""
    spec_path = Path(spec_path)
    run_dir = real_dir(Path(results_dir) / (name or load_spec(spec_path, "local").name))
    with exclusive(run_dir, "the run directory"):
        restore_interrupted(run_dir)
        saved = load_run(run_dir, spec_path)
        if saved is None:
            raise SpecError(f"no saved run in {run_dir}/ (run.json and records.jsonl); run `harness run {spec_path}` "
                            f"first", str(spec_path))
        analysis = analyze_saved(saved)
        stage = staging_dir(run_dir)
        try:
            _carry_run_files(run_dir, stage)
            (stage / "figures").mkdir()
            written = kinds.figure_maker(saved.spec.kind).figures(saved.spec, analysis, saved.records, saved.curves,
                                                                 stage / "figures")
            # A manifest, so the folder exists in a git checkout even when a run has nothing to plot (git keeps no
            # empty folders, and DVC would count the missing output as a change).
            names = sorted(Path(p).name for p in written)
            (stage / "figures" / FIGURE_MANIFEST).write_text(
                "".join(f"{n}\n" for n in names) or "(no figures for this run)\n", encoding="utf-8")
            write_json(stage / "metrics.json", analysis.metrics)
            write_json(stage / HEADLINE_FILE, headline(saved.spec, analysis.metrics))
            replace_dir(stage, run_dir)
        except KeyboardInterrupt:
            shutil.rmtree(stage, ignore_errors=True)
            raise Interrupted(f"interrupted during the analysis; {run_dir} is untouched (its run files, and any "
                              f"metrics.json and figures/ it had)") from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return analysis


HEADLINE_FILE = "headline.json"  # the spec's one DVC metric (metrics.json keeps every number)
ANALYSIS_OUTPUTS = ("metrics.json", HEADLINE_FILE, "figures")


def headline(spec, metrics: dict) -> dict:
    """The first of the kind's headline metrics the run has: what `dvc exp show` lists for the spec, so the table
    has one column per spec instead of every flat number."""
    for key in kinds.analyzer(spec.kind).headline_metrics(spec):
        if key in metrics:
            return {key: metrics[key]}
    return {}
_LEFTOVER = re.compile(r"^\..+\.(staging-.*|previous)$")  # what an interrupted write left; not carried over


def _carry_run_files(run_dir: Path, stage: Path) -> None:
    """Everything in the run directory but the analysis outputs, into the staging folder: files as hard links
    (same content, no copy), anything else copied; nothing the folder holds is lost by the swap."""
    for entry in sorted(Path(run_dir).iterdir()):
        if entry.name in ANALYSIS_OUTPUTS or _LEFTOVER.match(entry.name):
            continue
        target = stage / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
        else:
            try:
                os.link(entry, target)
            except OSError:
                shutil.copy2(entry, target)
