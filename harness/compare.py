"""`harness compare A B`: two runs of the same task, paired item by item for every outcome both record.

A side is a run directory, a spec name (its run in the results folder), or `name@rev`: the run committed at a git
revision (read with `git show`, never checked out). Both runs are analysed from their records as their pages are;
each outcome the two share (a method's generation or scored accuracy, a per-item indicator) is compared on the
items both answered: the mean over seeds per item, McNemar's exact test when each side has one seed of right/wrong
outcomes and the sign-flip test otherwise (the test the pages use), and the items that flip.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import stats
from harness.analyze import SavedRunError, analyze_saved, load_run
from registry.errors import SpecError

RUN_FILES = ("run.json", "records.jsonl", "curves.csv")


@dataclass
class Side:
    label: str
    outcomes: dict  # outcome name -> seed -> item -> value
    spec_name: str


@dataclass
class Comparison:
    outcome: str
    items: int
    a_rate: float
    b_rate: float
    difference: float
    pvalue: float
    test: str
    only_a: list = field(default_factory=list)  # items right (higher) under A only
    only_b: list = field(default_factory=list)


def _committed(name: str, rev: str, specs_dir: Path, results_dir: Path, into: Path) -> Path:
    """The run of `name` committed at `rev`, copied out of git into `into`."""
    folder = into / name
    folder.mkdir(parents=True)
    for file in RUN_FILES:
        result = subprocess.run(["git", "show", f"{rev}:{(results_dir / name / file).as_posix()}"], capture_output=True)
        if result.returncode != 0:
            if file == "curves.csv":
                continue
            first = (result.stderr.decode(errors="replace").strip().splitlines() or ["not found"])[0]
            raise SpecError(f"no committed {file} of {name!r} at {rev!r} ({first})")
        (folder / file).write_bytes(result.stdout)
    return folder


def load_side(ref: str, specs_dir: Path, results_dir: Path, scratch: Path) -> Side:
    """A run named by a folder, a spec name or path, or `name@rev`."""
    if "@" in ref and not Path(ref).exists():
        name, rev = ref.split("@", 1)
        name = Path(name).stem
        run_dir = _committed(name, rev, specs_dir, results_dir, scratch / f"side{len(list(scratch.iterdir()))}")
    elif Path(ref).is_dir() and (Path(ref) / "run.json").is_file():
        run_dir = Path(ref)
        name = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("name", run_dir.name)
    else:
        name = Path(ref).stem
        run_dir = results_dir / name
    spec_path = specs_dir / f"{name}.yaml"
    if not spec_path.is_file():
        raise SpecError(f"{ref}: no spec file {spec_path} for this run")
    saved = load_run(run_dir, spec_path)
    if saved is None:
        raise SavedRunError(f"{run_dir}: no saved run (run.json and records.jsonl)")
    return Side(ref, analyze_saved(saved).outcomes, name)


def compare_sides(a: Side, b: Side) -> list[Comparison]:
    rows = []
    for outcome in sorted(set(a.outcomes) & set(b.outcomes)):
        if outcome.endswith(".valid"):
            continue
        left, right = a.outcomes[outcome], b.outcomes[outcome]
        items = sorted(set.intersection(*[set(v) for v in (*left.values(), *right.values())]))
        if not items:
            continue
        mean_a = np.array([np.mean([float(s[i]) for s in left.values()]) for i in items])
        mean_b = np.array([np.mean([float(s[i]) for s in right.values()]) for i in items])
        binary = all(float(v) in (0.0, 1.0) for o in (left, right) for s in o.values() for v in s.values())
        test = stats.paired_difference_test(mean_a - mean_b, binary_single=binary and len(left) == len(right) == 1)
        rows.append(Comparison(outcome, len(items), float(mean_a.mean()), float(mean_b.mean()), test.mean_difference,
                               test.pvalue, test.method, [i for i, x, y in zip(items, mean_a, mean_b) if x > y],
                               [i for i, x, y in zip(items, mean_a, mean_b) if y > x]))
    return rows


def compare(ref_a: str, ref_b: str, specs_dir: Path = Path("specs"), results_dir: Path = Path("results")) -> tuple[
        Side, Side, list[Comparison]]:
    with tempfile.TemporaryDirectory(prefix="harness-compare-") as scratch:
        a = load_side(ref_a, specs_dir, results_dir, Path(scratch))
        b = load_side(ref_b, specs_dir, results_dir, Path(scratch))
    rows = compare_sides(a, b)
    if not rows:
        raise SpecError(f"{ref_a} and {ref_b} share no outcome on common items (are they runs of the same task?)")
    return a, b, rows


def markdown(a: Side, b: Side, rows: list[Comparison], flips: int = 20) -> str:
    lines = [f"# {a.label} vs {b.label}", "",
             "Paired on the items both runs answered; each item's outcome is its mean over the run's seeds. "
             "Positive Δ: A higher.", "",
             "| Outcome | Items | A | B | Δ | A only / B only | p | Test |", "|:--|--:|--:|--:|--:|--:|--:|:--|"]
    for r in rows:
        lines.append(f"| {r.outcome} | {r.items} | {r.a_rate:.3f} | {r.b_rate:.3f} | {r.difference:+.3f} | "
                     f"{len(r.only_a)} / {len(r.only_b)} | {r.pvalue:.3g} | {r.test} |")
    for r in rows:
        if r.only_a or r.only_b:
            lines += ["", f"**{r.outcome}**: higher under A on {', '.join(r.only_a[:flips]) or 'none'}"
                      + (" ..." if len(r.only_a) > flips else "") + f"; under B on {', '.join(r.only_b[:flips]) or 'none'}"
                      + (" ..." if len(r.only_b) > flips else "")]
    return "\n".join(lines) + "\n"
