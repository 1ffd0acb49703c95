"""The GSM8K lineage page (seed 002, phases 1-16): one row per version, reported beside reproduced, adjacent
versions compared on the same items, and the training curves that tell the versions apart.

A spec joins the page with the tag `gsm8k_lineage`; rows follow the report's order (ORDER; a spec not listed
there comes last). The first sentence of a spec's description says what changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import claims as C
from harness import stats
from harness.kinds.bridge import lineage
from harness.kinds.bridge.analysis import rate_cell
from harness.kinds.contract import Column, Table
from harness.report.figures import fit_y_axis, pyplot, save_figure
from harness.report.tables import percent
from harness.report.tables import findings_table as findings_table_of

TAG = "gsm8k_lineage"
ORDER = ("gsm8k_v01", "gsm8k_v02", "gsm8k_v03", "gsm8k_v03_1", "gsm8k_v04", "gsm8k_v05", "gsm8k_v06", "gsm8k_v07",
         "gsm8k_v08", "gsm8k_v09", "gsm8k_v10", "gsm8k_v11", "gsm8k_v12_dit", "gsm8k_v13_dit_xattn",
         "gsm8k_v14_dit_hybrid", "gsm8k_v15_vq", "gsm8k_v15_vq_ln", "gsm8k_v15_vq_cosine", "gsm8k_v15_vq_noln",
         "gsm8k_v15_vq_entropy", "gsm8k_v15_fsq8", "gsm8k_v15_fsq32", "gsm8k_v15_fsq_div", "gsm8k_v15_fsq_var",
         "gsm8k_v15_cont", "gsm8k_v15_tanh", "gsm8k_v15_rms", "gsm8k_v15_rms_div", "sst2_vq_signal_check")
PAGE = "gsm8k_lineage"
# (metric, column title): reproduced with its interval, beside the first reported value
COLUMNS = (("bridge.generation.accuracy", "Accuracy"), ("bridge.partial_rate", "Partial"),
           ("bridge.entity_transfer.overall", "Entity transfer (numbers + names)"),
           ("bridge.output_diversity", "Output diversity"))
CURVES = (("lm_loss", "LM loss"), ("flow_loss", "flow loss"), ("anchor_loss", "anchor loss"),
          ("info_nce_loss", "InfoNCE"), ("diversity_loss", "batch similarity"), ("scale", "output scale"),
          ("z_variance", "z variance"), ("code_diversity", "distinct codes / tokens"))


def _changed(spec) -> str:
    return spec.description.split(". ")[0].rstrip(".")


def _paired(previous, current) -> str | None:
    """The version's bridge against the row above on the items both answered, every seed (paired by item)."""
    if not (previous and previous.analysis and current.analysis):
        return None
    a = current.analysis.outcomes.get("bridge.generation", {})
    b = previous.analysis.outcomes.get("bridge.generation", {})
    if not a or not b:
        return None
    shared = sorted(set.intersection(*[set(v) for v in (*a.values(), *b.values())]))
    if not shared:
        return "no shared items"
    d = [np.mean([a[s][i] for s in a]) - np.mean([b[s][i] for s in b]) for i in shared]
    test = stats.paired_difference_test(d, binary_single=len(a) == len(b) == 1)
    return f"{100 * test.mean_difference:+.1f} pts, p {test.pvalue:.2g} (n {len(shared)})"


def pages(entries, figure_dir: Path) -> list[tuple[str, str, list[Table], list[str], list[Path]]]:
    rows = sorted((e for e in entries if TAG in e.spec.tags),
                  key=lambda e: (ORDER.index(e.spec.name) if e.spec.name in ORDER else len(ORDER), e.spec.name))
    if not rows:
        return []
    table = Table("lineage", "GSM8K bridge lineage (seed 002, sections 4-57): reproduced [95% Wilson] (reported, §)", [
        Column("Version", align="l"), Column("What changed", align="l"), Column("Profile", align="l"), Column("N", "d"),
        *[Column(title, align="l") for _, title in COLUMNS],
        Column("vs previous row (McNemar: gained / lost)", align="l")],
        caption="Reported values are the report's (20 held-out items, Llama-3.1-8B -> Mistral-7B); reproduced values "
                "come from each spec's run under the profile named. Partial and entity transfer follow the definitions "
                "on each page (the report defines neither). The paired test compares a version's bridge with the row "
                "above on the items both answered.")
    previous = None
    for e in rows:
        m = e.analysis.metrics if e.analysis else {}
        table.add(e.spec.name, _changed(e.spec), e.run["profile"] if e.run else "no run yet",
                  int(m["n_items"]) if "n_items" in m else None, *[rate_cell(m, e.spec, key, interval=True) for key, _ in COLUMNS],
                  _paired(previous, e))
        previous = e
    notes = ["Each version is one spec that `extends` the one before it (or specs/base/gsm8k.yaml); its page gives the "
             "full settings, every reported number beside the reproduced one, and its training curves."]
    if any(e.run is None for e in rows):
        notes.append("Not run: the spec is in the registry and validated, and its local stage has not run at this "
                     "commit (stages_not_run.yaml).")
    figure = _curves_figure(rows, figure_dir / PAGE)
    tables = [table, findings_table({e.spec.name: e for e in rows})]
    return [(PAGE, "GSM8K bridge lineage (seed 002, phases 1-16)", tables, notes, [figure] if figure else [])]


# ------------------------------------------------------------------------------------------ the report's findings
# Thresholds of the rules below are this project's (the report states its findings in words); each finding's row
# names the ones it uses.
DIVERSITY_BELOW = 0.5  # "collapsed": fewer distinct outputs than half the items
TRANSFER_BELOW = 0.1  # "no entity transfer": under a tenth of the question's numbers and names
PARTIAL_ABOVE = 0.5  # "entity scrambling": most outputs GSM8K-shaped but wrong
DISTINCT_ABOVE = 0.9  # "all distinct": over 90% distinct outputs
SCALE_ABOVE = 3.0  # generated embeddings at least 3x the targets' spread
CODE_STEP = 20  # codes collapse "within a few steps": by step 20
ANCHOR_RATIO = 0.01  # the MSE anchor's loss under 1% of the cosine anchor's
SATURATED_ABOVE = 0.5  # tanh saturation: over half the outputs pinned


NO_RUN = "no run of this version yet"


class _Missing(Exception):
    """A version has no run, or its run lacks what a rule reads."""


def _runs(entries: dict, names: list[str]) -> list:
    found = [entries.get(n) for n in names]
    if any(e is None or e.analysis is None for e in found):
        raise _Missing(NO_RUN)
    return found


def _outcomes(e, name: str) -> dict:
    values = e.analysis.outcomes.get(name)
    if not values:
        raise _Missing(f"{e.spec.name} has no {name}")
    return values


def _seed_values(e, key: str) -> dict:
    metrics = e.analysis.seed_metrics or {None: e.analysis.metrics}
    if any(key not in m for m in metrics.values()):
        raise _Missing(f"{e.spec.name} has no {key}")
    return {s: m[key] for s, m in metrics.items()}


def _level(e, name: str, outcome: str, threshold: float, direction: str):
    return C.Level(f"{name} ({e.spec.name})", _outcomes(e, outcome), threshold, direction, chosen_by="this project")


def _collapse(e) -> list:
    return [_level(e, "output diversity (distinct outputs / items)", "bridge.unique_output", DIVERSITY_BELOW, "below"),
            _level(e, "entity transfer (numbers + names)", "bridge.entity_transfer", TRANSFER_BELOW, "below")]


def _more(a, b, outcome: str, name: str):
    """a's outputs show `outcome` more often than b's, on the same items over every seed."""
    return C.Paired(a.spec.name, b.spec.name, _outcomes(a, outcome), _outcomes(b, outcome), "above",
                    unit=f"items ({name})")


def _per_run(e, name: str, rule) -> object:
    """An event per training run: rule(seed metrics) -> (happened, what was measured)."""
    metrics = e.analysis.seed_metrics or {None: e.analysis.metrics}
    happened, detail = {}, {}
    for seed, m in metrics.items():
        try:
            happened[seed], detail[seed] = rule(m)
        except KeyError as missing:
            raise _Missing(f"{e.spec.name} has no {missing}") from None
    return C.PerRun(f"{name} ({e.spec.name})", happened, detail)


def _finding_rows(entries: dict) -> list[tuple[str, str, str, list[str], object]]:
    """(finding, sections, the report's words or numbers, versions, evidence(*runs) -> list of evidence)."""
    def codes(m):
        step = m.get("training.bridge.code_collapse_step")
        held = m.get("bridge.vq.perplexity", 99) <= lineage.COLLAPSED_PERPLEXITY and step is not None and step <= CODE_STEP
        return held, (f"evaluation code perplexity {m['bridge.vq.perplexity']:.3g}; batch perplexity <= "
                      f"{lineage.COLLAPSED_PERPLEXITY:g} from step {int(step) if step else '—'} (this project's rule: by step "
                      f"{CODE_STEP})")

    def flow(e, falls: bool):
        evidence = [_level(e, "output diversity", "bridge.unique_output", DISTINCT_ABOVE, "above"),
                    _level(e, "entity transfer (numbers + names)", "bridge.entity_transfer", TRANSFER_BELOW, "below")]
        if falls:
            evidence.append(_per_run(e, "the flow loss halves", lambda m: (
                m["training.bridge.final_flow_loss"] < m["training.bridge.initial_flow_loss"] / 2,
                f"flow loss {m['training.bridge.initial_flow_loss']:.3g} -> {m['training.bridge.final_flow_loss']:.3g}")))
        return evidence

    unique_code = ["gsm8k_v15_fsq_div", "gsm8k_v15_fsq32"]  # with the term, and the same run without it

    def same_training(a, b):
        """The report's unique-code term (section 51) is a constant: with it, training is step for step the run
        without it. The harness builds the term as the report did, so this holds by construction."""
        with_term, without = (e.analysis.series.get("lm_loss", []) for e in (a, b))
        equal = sum(x == y for x, y in zip(with_term, without))
        seeds = _seed_values(a, "training.bridge.final_total_loss"), _seed_values(b, "training.bridge.final_total_loss")
        same = sum(x == y for s in _outcomes(a, "bridge.generation")
                   for x, y in zip(_outcomes(a, "bridge.generation")[s].values(),
                                   _outcomes(b, "bridge.generation").get(s, {}).values()))
        total = sum(len(v) for v in _outcomes(a, "bridge.generation").values())
        return [C.ByConstruction(
            f"the term is a constant (torch.unique, then a Python float), built as the report built it: the LM loss "
            f"is equal at {equal}/{len(with_term)} steps of the first seed, the final total loss differs only by the "
            f"term ({', '.join(f'{x:.4g} vs {y:.4g}' for x, y in zip(seeds[0].values(), seeds[1].values()))}), and "
            f"{same}/{total} item verdicts agree over the seeds")]

    def scale(e):
        return [_per_run(e, "generated embeddings at the noise's scale", lambda m: (
            m["bridge.soft_token.std"] / m["bridge.target_embedding.std"] > SCALE_ABOVE,
            f"generated std {m['bridge.soft_token.std']:.3g} against the targets' {m['bridge.target_embedding.std']:.3g} "
            f"(this project's rule: over {SCALE_ABOVE:g}x)"))]

    def anchor(a, b):
        mse, cosine = _seed_values(a, "training.bridge.initial_anchor_loss"), _seed_values(b, "training.bridge.initial_anchor_loss")
        return [C.PerRun("the MSE anchor's loss is ~0 where the cosine anchor's is not",
                         {s: mse[s] < ANCHOR_RATIO * cosine.get(s, next(iter(cosine.values()))) for s in mse},
                         {s: f"MSE {mse[s]:.3g} vs cosine {cosine.get(s, next(iter(cosine.values()))):.3g} at step 1 "
                             f"(this project's rule: under {ANCHOR_RATIO:.0%} of it)" for s in mse})]

    rows = [
        ("Posterior collapse: solution-shaped outputs that ignore the question", "5", "", ["gsm8k_v01"], _collapse),
        ("The MSE anchor carries no signal: its loss is ~0 where the cosine anchor's is not", "14-17", "",
         ["gsm8k_v03", "gsm8k_v03_1"], anchor),
        ("The train/eval primer mismatch makes the receiver talk about 'the thought vector'; the matching primer "
         "removes it", "17-19", "", ["gsm8k_v03_1", "gsm8k_v04"],
         lambda a, b: [_more(a, b, "bridge.meta_commentary", "outputs naming 'vector'/'thought'")]),
        ("Entity scrambling: GSM8K-style solutions with the question's entities lost", "19, 21", "", ["gsm8k_v05"],
         lambda e: [_level(e, "partial (solution-shaped, wrong)", "bridge.partial", PARTIAL_ABOVE, "above"),
                    _level(e, "entity transfer (numbers + names)", "bridge.entity_transfer", TRANSFER_BELOW, "below")]),
        ("Anchoring to the question degenerates into repetitive loops", "24", "", ["gsm8k_v06", "gsm8k_v05"],
         lambda a, b: [_more(a, b, "bridge.loop", "looping outputs")]),
        ("Tanh + scale ends the loops", "26", "", ["gsm8k_v06", "gsm8k_v07"],
         lambda a, b: [_more(a, b, "bridge.loop", "looping outputs, V6 against V7")]),
        ("The auto-encoder's outputs are all (nearly) identical", "36", "", ["gsm8k_v10"], _collapse),
        ("VQ with a tiny codebook init: the loss explodes to NaN", "47", "", ["gsm8k_v15_vq"],
         lambda e: [_per_run(e, "a NaN/Inf training loss", lambda m: (
             "training.bridge.nonfinite_loss_at_step" in m,
             (f"NaN/Inf loss at step {int(m['training.bridge.nonfinite_loss_at_step'])}"
              if "training.bridge.nonfinite_loss_at_step" in m else "every loss finite")
             + f"; VQ loss {m['training.bridge.initial_vq_loss']:.3g} at step 1"))]),
        *[(f"VQ codebook collapse to ~1 code within a few steps ({name.removeprefix('gsm8k_v15_vq_')})", "47-48", "",
           [name], lambda e: [_per_run(e, "codes collapse", codes)])
          for name in ("gsm8k_v15_vq_ln", "gsm8k_v15_vq_cosine", "gsm8k_v15_vq_noln", "gsm8k_v15_vq_entropy")],
        *[(f"FSQ collapse to ~1 code within a few steps ({name.removeprefix('gsm8k_v15_')})", "49-52", "", [name],
           lambda e: [_per_run(e, "codes collapse", codes)])
          for name in ("gsm8k_v15_fsq8", "gsm8k_v15_fsq32", "gsm8k_v15_fsq_div", "gsm8k_v15_fsq_var")],
        ("The unique-code diversity loss has no gradient: training is unchanged by it", "51", "", unique_code,
         same_training),
        ("Tanh saturates: most outputs pinned at +-scale as the output variance grows", "54", "", ["gsm8k_v15_tanh"],
         lambda e: [_per_run(e, "tanh saturates", lambda m: (
             m["training.bridge.final_tanh_saturation"] > SATURATED_ABOVE
             and m["training.bridge.final_z_variance"] > 10 * m["training.bridge.initial_z_variance"],
             f"saturated {percent(m['training.bridge.final_tanh_saturation'])}; z variance "
             f"{m['training.bridge.initial_z_variance']:.3g} -> {m['training.bridge.final_z_variance']:.3g} (this "
             f"project's rule: over {SATURATED_ABOVE:.0%} saturated and the variance up tenfold)"))]),
        ("RMS normalisation collapses to one template", "56", "", ["gsm8k_v15_rms"], _collapse),
        ("The batch diversity loss restores distinct outputs (section 56's expectation: the report gives no result "
         "for this run; its later bridges all train with it)", "56", "", ["gsm8k_v15_rms_div", "gsm8k_v15_rms"],
         lambda a, b: [_more(a, b, "bridge.unique_output", "distinct outputs")]),
        ("Flow bridge (V12): the flow loss falls, outputs are all distinct, no entity transfers", "39",
         "flow loss 1.13 -> 0.098; 20/20 distinct; 1/115 entities", ["gsm8k_v12_dit"], lambda e: flow(e, True)),
        *[(f"Flow bridge ({name.removeprefix('gsm8k_')}): outputs are all distinct, no entity transfers (the report's "
           "loss plateaued high)", sections, "", [name], lambda e: flow(e, False))
          for name, sections in (("gsm8k_v13_dit_xattn", "42"), ("gsm8k_v14_dit_hybrid", "45"))],
        ("Flow bridge (v12_dit): generated embeddings at the noise's scale, not the receiver's", "39", "",
         ["gsm8k_v12_dit"], scale),
    ]
    return rows


def findings_table(entries: dict) -> Table:
    """The report's qualitative findings about the lineage, each decided by the claims engine over every seed."""
    findings = []
    for finding, sections, reported, names, evidence in _finding_rows(entries):
        try:
            parts = evidence(*_runs(entries, names))
        except _Missing as why:
            parts = [C.Untestable(str(why), not_run=str(why) == NO_RUN)]
        claim = C.Claim(f"lineage.{names[0]}", finding, sections, "002_401dee0311fc0452.txt", reported, parts,
                        subject=f"{PAGE}: {', '.join(names)}")
        findings.append(C.decide(claim))
    return findings_table_of(findings, "The report's qualitative findings against the lineage runs", subject=True)


FAMILIES = ("V1–V11", "V12–V14 flow", "V15 VQ / FSQ", "V15 continuous")


def _family(name: str) -> str:
    """The lineage's design families, one column of small multiples each (the SST-2 check is a VQ bridge)."""
    if name.startswith("sst2") or any(q in name for q in ("_vq", "_fsq")):
        return FAMILIES[2]
    if "_v15" in name:
        return FAMILIES[3]
    if any(f"_v{n}" in name for n in (12, 13, 14)):
        return FAMILIES[1]
    return FAMILIES[0]


def _curves_figure(rows, figure_dir: Path) -> Path | None:
    """Small multiples: one row per logged curve, one column per design family, one line per version (distinct
    colours within a family, its legend above the column); each panel's y-axis fits its bulk (log where the
    values span decades, spikes clipped and said so). The first training seed's curves."""
    runs = [e for e in rows if e.analysis and e.analysis.series]
    panels = [(column, title) for column, title in CURVES if any(column in e.analysis.series for e in runs)]
    families = [f for f in FAMILIES if any(_family(e.spec.name) == f for e in runs)]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(panels) + 1, len(families), squeeze=False, 
                             figsize=(3.6 * len(families), 1.2 + 2.1 * len(panels)),
                             gridspec_kw={"height_ratios": [0.8] + [1] * len(panels)})
    for col, family in enumerate(families):
        members = [e for e in runs if _family(e.spec.name) == family]
        colours = {e.spec.name: plt.get_cmap("tab10" if len(members) <= 10 else "tab20")(n) for n, e in enumerate(members)}
        handles = {}
        for row, (column, title) in enumerate(panels, 1):
            ax = axes[row][col]
            values = []
            for e in members:
                points = e.analysis.series.get(column)
                if points:
                    handles[e.spec.name], = ax.plot(*zip(*points), lw=1, color=colours[e.spec.name],
                                                    ls=":" if e.spec.name.startswith("sst2") else "-")
                    values += [v for _, v in points]
            if not values:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{title}: not logged", ha="center", va="center", fontsize=7, color="grey",
                        transform=ax.transAxes)
                continue
            clipped = fit_y_axis(ax, values)
            ax.set_title(f"{title}" + (f" ({clipped})" if clipped else ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("step", fontsize=7)
        legend_ax = axes[0][col]
        legend_ax.axis("off")
        legend = legend_ax.legend(handles.values(), [n.removeprefix("gsm8k_") for n in handles], loc="center",
                                  ncol=2, fontsize=7, frameon=False, title=family)
        legend.get_title().set_fontweight("bold")
    fig.suptitle("GSM8K lineage training curves (first training seed)", fontsize=11)
    figure_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, figure_dir / "lineage_curves.png", dpi=110)
