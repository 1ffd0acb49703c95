"""Everyday commands (`harness validate specs/`, `harness list`, `harness report`) at a baseline revision against
the working tree, in one run on the same machine, alone.

    python benchmarks/command_startup.py [BASELINE_REV]    -> benchmarks/results/command_startup.json

The baseline's code runs from a scratch git worktree of BASELINE_REV (its own specs and results, which are the
committed ones), the working tree's from here; each command runs REPEATS times per side, alternating, and the
median wall time of a whole process (interpreter start included) is what a user waits. `harness report` writes
into a scratch folder, so reports/ is not touched.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path("benchmarks/results/command_startup.json")
DEFAULT_BASELINE = "8e9a298"  # main before specs were parsed once per command and the report stopped importing torch
REPEATS = 3
COMMANDS = {"validate": ["validate", "specs/"], "list": ["list"], "report": ["report", "--out", "{scratch}/reports"]}


def _time(command: list[str], cwd: Path, scratch: Path) -> float:
    args = [a.format(scratch=scratch) for a in command]
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the tree's own harness/ and registry/ before the installed ones
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _imported_from(cwd: Path) -> str:
    code = "import harness; print(harness.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)},
                          check=True, capture_output=True, text=True).stdout.strip()


def main(baseline: str = DEFAULT_BASELINE) -> None:
    repo = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), baseline], check=True, capture_output=True)
        try:
            trees = {"baseline": old, "working": repo}
            for name, tree in trees.items():
                where = _imported_from(tree)
                assert where.startswith(str(tree)), f"the {name} side imported harness from {where}"
            times: dict[str, dict[str, list[float]]] = {c: {"baseline": [], "working": []} for c in COMMANDS}
            for _ in range(REPEATS):
                for command, args in COMMANDS.items():
                    for side, tree in trees.items():
                        scratch = Path(tempfile.mkdtemp(dir=tmp))
                        times[command][side].append(round(_time(args, tree, scratch), 3))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], check=True, capture_output=True)
    rows = {c: {"baseline_s": statistics.median(t["baseline"]), "working_s": statistics.median(t["working"]),
                "speed_up": round(statistics.median(t["baseline"]) / statistics.median(t["working"]), 2),
                "runs": t} for c, t in times.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"baseline": baseline, "working_tree_at": commit, "repeats": REPEATS, "cpus": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "commands": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for command, row in rows.items():
        print(f"{command:9s} baseline {row['baseline_s']:6.2f} s   working {row['working_s']:6.2f} s   "
              f"x{row['speed_up']}")


if __name__ == "__main__":
    main(*sys.argv[1:])
