"""The GSM8K lineage page (seed 002, phases 1-16): one row per version, reported beside reproduced, adjacent
versions compared on the same items, and the training curves that tell the versions apart.

A spec joins the page with the tag `gsm8k_lineage`; rows follow the report's order (ORDER; a spec not listed
there comes last). The first sentence of a spec's description says what changed.
"""

from __future__ import annotations

from pathlib import Path

from harness import stats
from harness.kinds.bridge.analysis import _pct
from harness.report.figures import pyplot, save_figure
from harness.report.tables import Column, Table

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


def _reported(spec, key: str):
    entry = next((e for e in spec.expected if e.metric == key), None)
    return entry if entry is not None and isinstance(entry.value, float) else None


def _cell(metrics: dict, spec, key: str) -> str:
    got = metrics.get(key)
    text = "—" if got is None else _pct(got)
    ci = key.removesuffix(".accuracy")  # accuracies keep their interval beside them: bridge.generation.ci_low
    if got is not None and f"{ci}.ci_low" in metrics:
        text += f" [{100 * metrics[ci + '.ci_low']:.1f}, {100 * metrics[ci + '.ci_high']:.1f}]"
    entry = _reported(spec, key)
    return text + (f" ({_pct(entry.value)}, §{entry.section})" if entry else "")


def _changed(spec) -> str:
    return spec.description.split(". ")[0].rstrip(".")


def _paired(previous, current) -> str | None:
    """McNemar on the items both versions answered (bridge generation accuracy)."""
    if not (previous and previous.analysis and current.analysis):
        return None
    a, b = previous.analysis.per_item.get("bridge", {}), current.analysis.per_item.get("bridge", {})
    shared = sorted(set(a) & set(b))
    if not shared:
        return "no shared items"
    test = stats.mcnemar_test([b[i] for i in shared], [a[i] for i in shared])
    return f"+{test.b} / −{test.c}, p {test.pvalue:.2g} (n {len(shared)})"


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
        table.add(e.spec.name, _changed(e.spec), e.run["profile"] if e.run else "not run",
                  int(m["n_items"]) if "n_items" in m else None, *[_cell(m, e.spec, key) for key, _ in COLUMNS],
                  _paired(previous, e))
        previous = e
    notes = ["Each version is one spec that `extends` the one before it (or specs/base/gsm8k.yaml); its page gives the "
             "full settings, every reported number beside the reproduced one, and its training curves.",
             "Not run: the spec is in the registry and validated, and its local stage has not run at this commit "
             "(README, 'Stages not run at this commit')."]
    figure = _curves_figure(rows, figure_dir / PAGE)
    return [(PAGE, "GSM8K bridge lineage (seed 002, phases 1-16)", [table], notes, [figure] if figure else [])]


def _curves_figure(rows, figure_dir: Path) -> Path | None:
    """One panel per curve, one line per version that logged it."""
    runs = [e for e in rows if e.analysis and e.analysis.series]
    panels = [(column, title) for column, title in CURVES if any(column in e.analysis.series for e in runs)]
    if not panels:
        return None
    plt = pyplot()
    cols = 2
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(11, 2.8 * ((len(panels) + 1) // cols)),
                             squeeze=False)
    for ax, (column, title) in zip(axes.flat, panels):
        for n, e in enumerate(runs):
            points = e.analysis.series.get(column)
            if points:  # 20 colours; V15 dashed, the SST-2 check dotted, so versions stay apart
                style = ":" if not e.spec.name.startswith("gsm8k") else "--" if "_v15" in e.spec.name else "-"
                ax.plot(*zip(*points), lw=1, ls=style, color=plt.get_cmap("tab20")(n % 20),
                        label=e.spec.name.removeprefix("gsm8k_"))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if column in ("z_variance",):
            ax.set_yscale("log")
        ax.legend(fontsize=5, ncol=2)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    figure_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, figure_dir / "lineage_curves.png", dpi=110)
