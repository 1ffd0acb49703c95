"""How long `harness view` takes to build the site for every committed result (the issue asks under 30 s on two
cores), against rendering the Markdown/LaTeX pages of the same results (`harness report`), in one run.

    python benchmarks/view_build.py    -> benchmarks/results/view_build.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from harness.report.render import build_reports
from registry.loader import spec_files
from harness.view.site import build_site

OUT = Path("benchmarks/results/view_build.json")


def main() -> None:
    specs = spec_files([Path("specs")])
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        build_site(specs, Path("results"), Path(scratch) / "view")
        view_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (Path(scratch) / "view").rglob("*") if p.is_file())
        start = time.perf_counter()
        build_reports(specs, Path("results"), Path(scratch) / "reports")
        report_seconds = time.perf_counter() - start
    result = {"specs": len(specs), "view_seconds": round(view_seconds, 2), "report_seconds": round(report_seconds, 2),
              "view_megabytes": round(size / 2**20, 1), "ratio_view_to_report": round(view_seconds / report_seconds, 2)}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
