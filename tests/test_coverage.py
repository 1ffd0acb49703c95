"""registry/seed_sections.yaml says which seed sections are encoded and which are not, and stays true."""

import pytest

from conftest import REPO, SPECS
from harness.report.coverage import SeedSections, seed_sections
from registry import load_spec

SEEDS = REPO.parent / "shared" / "seeds"


def test_every_entry_names_existing_specs_and_files_or_says_why_not():
    rows = seed_sections()
    assert len(rows) >= 20
    names = {p.stem for p in SPECS}
    for row in rows:
        for name in row.specs:
            assert name in names, f"seed {row.seed} ({row.sections}) names spec {name!r}, which does not exist"
        for path in row.also:
            assert (REPO / path).exists(), f"seed {row.seed} ({row.sections}) names {path!r}, which does not exist"
        if row.specs or row.also:
            assert row.status.startswith("encoded"), row
        else:
            assert row.status.startswith("not encoded: "), f"seed {row.seed} {row.sections}: nothing encodes it, no reason"


def test_every_seed_report_has_entries_and_every_spec_is_under_its_seed():
    rows = seed_sections()
    if SEEDS.is_dir():
        assert {row.seed for row in rows} >= {p.name[:3] for p in SEEDS.glob("[0-9][0-9][0-9]_*.txt")}
    for path in SPECS:
        spec = load_spec(path, "paper")
        if spec.source is None or spec.source.seed is None:
            continue  # documented elsewhere or nowhere: no seed report to be listed under
        under = [row for row in rows if row.seed == spec.source.seed[:3] and spec.name in row.specs]
        assert under, f"{spec.name} (seed {spec.source.seed[:3]}) is in no entry of its seed"


def test_an_entry_without_a_reason_is_refused():
    with pytest.raises(ValueError, match="status"):
        SeedSections(seed="002", sections="1-3", status="not encoded")
