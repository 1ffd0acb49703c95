"""Sweeps in one command: `harness run SPEC --sweep bridge.soft_tokens=16,32 --seeds 0,1`.

Every combination of the swept values is one variant, run with its overrides into its own run directory under
one run place (`runs/<run id>/<variant>/results/<name>/`); then `runs/<run id>/sweep.md` puts the variants side
by side: each one's headline metric over its seeds (every seed beside it) and, for every outcome the variants
share, the paired test of each variant against the first on the items they share (the test the pages use).

Overrides use one grammar everywhere: `key.path=value` with the value read as YAML; a leading `+` (what DVC's
`-S` needs for a key the file does not have) is accepted and ignored, since `--set` creates missing keys anyway.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import kinds
from harness.analyze import analyze_run
from harness.compare import Side, compare_sides
from harness.engine import RunSettings, run_spec
from registry import load_spec
from registry.errors import SpecError

# the field a kind's training seeds live in (--seeds sets it); other kinds sweep their spec `seed` instead
SEED_FIELDS = {"bridge": "training.seeds", "alignment": "training_seeds", "halflife": "seeds"}


def normalise(assignment: str) -> str:
    """One override grammar: DVC's `+key=value` is `key=value` here."""
    return assignment[1:] if assignment.startswith("+") else assignment


def split_values(text: str) -> list[str]:
    """'16,32' -> ['16', '32']; commas inside [...] or {...} stay with their value ('[0,1],[2]')."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values if v.strip()]


@dataclass
class Variant:
    name: str
    overrides: tuple[str, ...]


def variants(spec_path: Path, sweeps: tuple[str, ...], seeds: str | None) -> list[Variant]:
    axes = []
    for sweep in sweeps:
        key, sep, values = normalise(sweep).partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise SpecError(f"--sweep {sweep!r}: expected KEY=V1,V2,... (e.g. bridge.soft_tokens=16,32)")
        axes.append([(key.strip(), v) for v in split_values(values)])
    fixed: tuple[str, ...] = ()
    if seeds is not None:
        kind = load_spec(spec_path, "tiny").kind
        values = split_values(seeds)
        if kind in SEED_FIELDS:
            fixed = (f"{SEED_FIELDS[kind]}=[{','.join(values)}]",)
        else:  # one run per seed: the kind has no seed axis inside a run
            axes.append([("seed", v) for v in values])
    if not axes:
        return [Variant("default", fixed)]
    out = []
    for combo in itertools.product(*axes):
        name = "__".join(f"{key.split('.')[-1]}-{value}" for key, value in combo)
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        out.append(Variant(name, tuple(f"{key}={value}" for key, value in combo) + fixed))
    return out


def run_sweep(spec_path: Path, base: RunSettings, sweeps: tuple[str, ...], seeds: str | None, place: Path) -> Path:
    """Run every variant (and analyse it) into `place`, then write `place/sweep.md`; returns that page."""
    found = variants(spec_path, sweeps, seeds)
    sides, headlines = [], []
    for variant in found:
        settings = RunSettings(profile=base.profile, results_dir=place / variant.name / "results",
                               cache_dir=base.cache_dir, data_mirror=base.data_mirror, device=base.device,
                               overrides=tuple(normalise(o) for o in base.overrides) + variant.overrides,
                               show_progress=base.show_progress)
        summary = run_spec(spec_path, settings)
        analysis = analyze_run(spec_path, settings.results_dir, summary.name)
        spec = load_spec(spec_path, base.profile, settings.overrides)
        keys = kinds.analyzer(spec.kind).headline_metrics(spec)
        key = next((k for k in keys if k in analysis.metrics), None)
        per_seed = {k.rsplit(".seed_", 1)[1]: v for k, v in analysis.metrics.items()
                    if key and k.startswith(f"{key}.seed_") and k.rsplit(".seed_", 1)[1].isdigit()}
        headlines.append((key, analysis.metrics.get(key), per_seed))
        sides.append(Side(variant.name, analysis.outcomes, spec.name))
    page = place / "sweep.md"
    several_seeds = seeds is not None and len(split_values(seeds)) > 1
    page.write_text(_page(spec_path, found, headlines, sides, several_seeds), encoding="utf-8")
    return page


def _page(spec_path: Path, found: list[Variant], headlines: list, sides: list[Side], several_seeds: bool) -> str:
    lines = [f"# Sweep of {spec_path.stem}", "",
             f"{len(found)} variants, each its own run directory under this folder; paired tests against the first "
             "variant on the items both answered (the pages' test: McNemar for one seed each, else the sign-flip "
             "test over items, every seed averaged per item).", "",
             "| Variant | Overrides | Headline metric | All seeds | Per seed |", "|:--|:--|:--|--:|:--|"]
    for variant, (key, value, per_seed) in zip(found, headlines):
        seeds = " / ".join(f"{s}: {v:.4g}" for s, v in sorted(per_seed.items())) \
            or ("equal on every seed" if several_seeds and value is not None else "—")
        lines.append(f"| {variant.name} | `{' '.join(variant.overrides) or '—'}` | {key or '—'} | "
                     f"{'—' if value is None else f'{value:.4g}'} | {seeds} |")
    if len(sides) > 1:
        lines += ["", "| Variant | Outcome | Items | Variant | First | Δ | p | Test |",
                  "|:--|:--|--:|--:|--:|--:|--:|:--|"]
        for side in sides[1:]:
            for row in compare_sides(side, sides[0]):
                lines.append(f"| {side.label} | {row.outcome} | {row.items} | {row.a_rate:.3f} | {row.b_rate:.3f} | "
                             f"{row.difference:+.3f} | {row.pvalue:.3g} | {row.test} |")
        spreads = [np.std(list(per.values()), ddof=1) for _, _, per in headlines if len(per) > 1]
        if spreads:
            lines += ["", "Across-seed spread of the headline metric (SD over seeds, per variant): "
                          + ", ".join(f"{s:.3g}" for s in spreads) + "."]
    return "\n".join(lines) + "\n"
