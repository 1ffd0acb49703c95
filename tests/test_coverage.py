"""README's table of seed sections and specs says what is encoded and what is not, and stays true."""

import re

from conftest import REPO, SPECS
from registry import load_spec

SEEDS = REPO.parent / "shared" / "seeds"


def _rows() -> list[dict]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Seed sections and specs", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append(dict(zip(("seed", "sections", "experiment", "specs", "status"), cells)))
    return rows


def test_every_row_names_existing_specs_or_says_why_not():
    rows = _rows()
    assert len(rows) >= 20
    names = {p.stem for p in SPECS}
    for row in rows:
        named = re.findall(r"`([^`]+)`", row["specs"])
        for name in named:
            assert name in names or (REPO / name).exists(), f"seed {row['seed']} names {name!r}, which does not exist"
        if not named:
            assert re.match(r"not encoded: \S", row["status"]), f"seed {row['seed']} {row['sections']}: no spec, no reason"
        else:
            assert row["status"].startswith("encoded"), row


def test_every_seed_report_is_in_the_table_and_every_spec_is_under_its_seed():
    rows = _rows()
    seeds = {row["seed"] for row in rows}
    if SEEDS.is_dir():
        assert seeds >= {p.name[:3] for p in SEEDS.glob("[0-9][0-9][0-9]_*.txt")}
    for path in SPECS:
        spec = load_spec(path, "paper")
        under = [row for row in rows if row["seed"] == spec.source.seed[:3] and f"`{spec.name}`" in row["specs"]]
        assert under, f"{spec.name} (seed {spec.source.seed[:3]}) is in no row of its seed"
