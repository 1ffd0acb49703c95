"""Residual-stream gain, the analysis: records -> gains, cumulative energy, H18, tables."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from harness import stats
from harness.claims import findings_for
from harness.kinds.contract import Analysis, Column, Table
from harness.kinds.residual_gain import claims as residual_claims
from registry.kinds.residual_gain import ResidualGainSpec


def derive(record: dict, early_fraction: float, suffix: str = "last") -> dict:
    """The report's quantities from one record's per-layer norms (see the spec docstring)."""
    norms = np.asarray(record[f"norms_{suffix}"], dtype=float)
    gains = norms[1:] / norms[:-1]  # gains[i] = gain of block i
    n_blocks = len(gains)
    early = max(1, math.ceil(early_fraction * n_blocks))
    peak = int(np.argmax(gains[:early]))
    post = record[f"final_norm_out_{suffix}"]
    last_pre = float(gains[-1])
    plateau = norms[early + 1:-1]  # block outputs after the early region, before the last block
    return {
        "embedding_norm": float(norms[0]),
        "emb_gain": float(gains[0]),
        "last_gain_pre_norm": last_pre,
        "last_gain_post_norm": float(post / norms[-2]),
        "cumulative_energy": float(norms[-1] / norms[0]),
        "largest_early_gain": float(gains[peak]),
        "largest_early_gain_layer": peak,
        "effective_amplification": last_pre * record["wu_sigma_max"],
        "plateau_norm": float(np.median(plateau)) if len(plateau) else math.nan,
        "plateau_norm_min": float(plateau.min()) if len(plateau) else math.nan,
        "plateau_norm_max": float(plateau.max()) if len(plateau) else math.nan,
        "gains": gains.tolist(),
    }


PER_PROMPT = ("last_gain_pre_norm", "last_gain_post_norm", "cumulative_energy", "emb_gain",
              "largest_early_gain", "largest_early_gain_layer", "effective_amplification", "embedding_norm",
              "plateau_norm", "plateau_norm_min", "plateau_norm_max")


CLAIM_CATALOGUE = residual_claims.CATALOGUE


def headline_metrics(spec: ResidualGainSpec) -> list[str]:
    """Metrics every complete run must have (a run whose headline became NaN or vanished is broken)."""
    return [f"{m}.{key}" for m in spec.models for key in ("last_gain_pre_norm.mean", "cumulative_energy.mean",
                                                            "wu_sigma_max")]


def analyze(spec: ResidualGainSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    out = Analysis()
    derived = {(r["model"], r["prompt_id"]): derive(r, spec.early_layers_fraction) for r in records}
    tokmean = {(r["model"], r["prompt_id"]): derive(r, spec.early_layers_fraction, "tokmean") for r in records}
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    expected = {e.metric: e.value for e in spec.expected}

    summary = Table("summary", "Last-layer gain and cumulative energy (mean over prompts)", [
        Column("Model", align="l"), Column("Norm", align="l"), Column("MLP", align="l"),
        Column("Last gain (pre-norm)", ".2f"), Column("range over prompts", align="l"), Column("Expands?", align="l"),
        Column("Last gain (post-norm)", ".3g"), Column("Cumulative energy", ",.1f"),
        Column("σ_max(W_U)", ".2f"), Column("Effective amp.", ".2f")],
        caption="Pre-norm: last block output over the previous block's (both before the final norm). "
                "Post-norm: final-norm output over the previous block's output (transformers' hidden_states[-1]/[-2]). "
                "Norms of the last token.")
    arch = Table("architecture", "Architecture read from each model", [
        Column("Model", align="l"), Column("Layers", "d"), Column("d_model", "d"), Column("Vocab", ",d"),
        Column("RoPE θ", align="l"), Column("Context", ",d"), Column("Embedding norm", ".2f"), Column("Parameters", ",d")])
    early = Table("early", "Early-layer explosion and plateau", [
        Column("Model", align="l"), Column("Emb→L0 gain", ".1f"), Column("Largest early gain", ".1f"),
        Column("at block", "d"), Column("Blocks searched", "d"), Column("Plateau norm", ",.1f"),
        Column("plateau range", align="l")],
        caption=f"Largest gain among the first {spec.early_layers_fraction:.0%} of blocks (block 0 = embedding→layer 0), "
                "for the prompt with the largest value. Plateau: the block-output norms after those blocks and before "
                "the last one (median, and range over blocks), mean over prompts.")
    h18 = Table("h18", "H18: does the last-layer gain rise with next-token entropy?", [
        Column("Model", align="l"), Column("Prompts", "d"), Column("Pearson r", ".3f"),
        Column("95% Fisher-z interval", align="l"), Column("p", ".3g"), Column("Spearman ρ", ".3f"), Column("p ", ".3g"),
        Column("Mean entropy (nats)", ".2f")],
        caption="Across prompts, correlation of the pre-norm last-layer gain with the entropy of the next-token "
                "distribution (the verdict on H18 is in the findings table).")
    h18_data = {}
    with_reported = any(".last_gain_pre_norm." in k or ".cumulative_energy." in k for k in expected)
    per_prompt = Table("per_prompt", "Per prompt", [
        Column("Model", align="l"), Column("Prompt", align="l"), Column("Tokens", "d"), Column("Entropy", ".2f"),
        Column("Last gain (pre)", ".3f"), *([Column("reported", ".2f")] if with_reported else []),
        Column("Last gain (post)", ".3g"), Column("Last gain (token mean)", ".3f"), Column("Cumulative", ",.1f"),
        *([Column("reported ", ",.0f")] if with_reported else [])],
        caption="Entropy of the next-token distribution in nats. Token mean: norms averaged over the "
                "prompt's non-special tokens instead of taken at the last token.")

    for model, rows in by_model.items():
        first = rows[0]
        display = first["display_name"]
        values = {k: [derived[(model, r["prompt_id"])][k] for r in rows] for k in PER_PROMPT}
        for r in rows:
            d = derived[(model, r["prompt_id"])]
            for key in PER_PROMPT:
                out.set(f"{model}.{key}.{r['prompt_id']}", d[key])
            out.set(f"{model}.last_gain_pre_norm_tokmean.{r['prompt_id']}", tokmean[(model, r["prompt_id"])]["last_gain_pre_norm"])
            out.set(f"{model}.next_token_entropy.{r['prompt_id']}", r["next_token_entropy"])
            pid = r["prompt_id"]
            reported = [expected.get(f"{model}.last_gain_pre_norm.{pid}")] if with_reported else []
            reported_cum = [expected.get(f"{model}.cumulative_energy.{pid}")] if with_reported else []
            per_prompt.add(display, pid, r["n_tokens"], r["next_token_entropy"], d["last_gain_pre_norm"], *reported,
                           d["last_gain_post_norm"], tokmean[(model, pid)]["last_gain_pre_norm"],
                           d["cumulative_energy"], *reported_cum)
        for key in PER_PROMPT:
            out.set(f"{model}.{key}.mean", float(np.mean(values[key])))
        out.set(f"{model}.next_token_entropy.mean", float(np.mean([r["next_token_entropy"] for r in rows])))
        for key in ("wu_sigma_max", "arch_n_layers", "arch_hidden_size", "arch_vocab_size", "arch_context_length"):
            out.set(f"{model}.{key.removeprefix('arch_')}", first[key])
        if isinstance(first["arch_rope_theta"], (int, float)):
            out.set(f"{model}.rope_theta", first["arch_rope_theta"])
        out.facts[f"{model}.norm_type"] = first["arch_norm_type"]
        out.facts[f"{model}.mlp_type"] = first["arch_mlp_type"]
        out.facts[f"{model}.rope_theta"] = str(first["arch_rope_theta"])

        gains = values["last_gain_pre_norm"]
        mean_gain = float(np.mean(gains))
        summary.add(display, first["arch_norm_type"], first["arch_mlp_type"], mean_gain,
                    f"{min(gains):.2f}–{max(gains):.2f}", "yes" if mean_gain > 1 else "no",
                    float(np.mean(values["last_gain_post_norm"])), float(np.mean(values["cumulative_energy"])),
                    first["wu_sigma_max"], float(np.mean(values["effective_amplification"])))
        arch.add(display, first["arch_n_layers"], first["arch_hidden_size"], first["arch_vocab_size"],
                 _fmt_theta(first["arch_rope_theta"]), first["arch_context_length"],
                 float(np.mean(values["embedding_norm"])), first["arch_n_parameters"])
        peak_i = int(np.argmax(values["largest_early_gain"]))
        early.add(display, float(np.mean(values["emb_gain"])), values["largest_early_gain"][peak_i],
                  values["largest_early_gain_layer"][peak_i],
                  max(1, math.ceil(spec.early_layers_fraction * first["arch_n_layers"])),
                  float(np.mean(values["plateau_norm"])),
                  f"{np.mean(values['plateau_norm_min']):,.1f}–{np.mean(values['plateau_norm_max']):,.1f}")

        entropies = [r["next_token_entropy"] for r in rows]
        corr = stats.correlation(gains, entropies)
        fisher = stats.fisher_z_correlation(gains, entropies)
        for key in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"):
            out.set(f"{model}.h18.{key}", getattr(corr, key))
        out.set(f"{model}.h18.pearson_ci_low", fisher.ci_low)
        out.set(f"{model}.h18.pearson_ci_high", fisher.ci_high)
        h18.add(display, corr.n, corr.pearson_r,
                f"[{fisher.ci_low:+.2f}, {fisher.ci_high:+.2f}]" if fisher.ci_low == fisher.ci_low else None,
                corr.pearson_p, corr.spearman_rho, corr.spearman_p, float(np.mean(entropies)))
        h18_data[display] = (gains, entropies)
        ids = [r["prompt_id"] for r in rows]  # per prompt, for paired comparisons across runs (harness compare)
        out.outcomes[f"{model}.last_gain_pre_norm"] = {0: dict(zip(ids, gains))}
        out.outcomes[f"{model}.next_token_entropy"] = {0: dict(zip(ids, entropies))}

    out.tables += [summary, arch, early, h18]
    out.findings = findings_for(spec, CLAIM_CATALOGUE, residual_claims.ClaimData(h18_data))
    out.notes.append(_readings_note(spec, out))
    if spec.pairs:
        out.tables.append(_pairs_table(spec, derived, by_model, out))
    if spec.ratios:
        out.tables.append(_ratios_table(spec, derived, by_model, out))
    out.tables.append(per_prompt)
    if any(math.isnan(row[2]) for row in h18.rows if isinstance(row[2], float)):
        out.notes.append("H18 correlations need at least three prompts with varying values; they are blank otherwise.")
    return out


READINGS = ("\"Last Gain\" is not defined in the report. The pre-norm reading (last block's output over the previous "
            "block's, both before the final norm) is what the paper spec binds every reported gain to; the post-norm "
            "reading (final norm's output over the previous block's output) is what transformers' "
            "hidden_states[-1] / hidden_states[-2] gives. ")
BOTH = "Each reported gain is listed under both readings in the table of reported numbers."


def _verdict_note(spec: ResidualGainSpec) -> str:
    """What the reported gains can be checked against: only a run of the report's own models."""
    reported_models = {e.metric.split(".")[0] for e in spec.expected}
    if set(spec.models) & reported_models:
        return (" With the report's models, the reading whose value matches the reported one is the report's; a "
                "gain that matches under neither reading does not match the report.")
    return (" This run's models are not the report's, so neither reading can be checked against the report's gains "
            "here (the paper spec runs the report's models).")


def spec_notes(spec: ResidualGainSpec) -> list[str]:
    """For a page not run yet: the two readings of the undefined "Last Gain"."""
    return [READINGS + BOTH + _verdict_note(spec)]


def _readings_note(spec: ResidualGainSpec, out: Analysis) -> str:
    """The report never defines "Last Gain"; both readings, how far apart they are here, and what each
    reported gain is compared with."""
    ratios = []
    for model in spec.models:
        pre, post = out.metrics.get(f"{model}.last_gain_pre_norm.mean"), out.metrics.get(f"{model}.last_gain_post_norm.mean")
        if pre and post:
            ratios.append(f"{model} {pre:.3g} pre-norm vs {post:.3g} post-norm ({math.log10(max(pre, post) / min(pre, post)):.1f} "
                          f"orders of magnitude apart)")
    return READINGS + "Here: " + "; ".join(ratios) + ". " + BOTH + _verdict_note(spec)


def _ratios_table(spec, derived, by_model, out: Analysis) -> Table:
    """Cross-model ratios of the last-layer gain on one prompt (both readings) and of RoPE theta."""
    expected = {e.metric: e.value for e in spec.expected}
    table = Table("ratios", "Cross-model ratios", [
        Column("Numerator", align="l"), Column("Denominator", align="l"), Column("Prompt", align="l"),
        Column("Last gain ratio (pre-norm)", ".3f"), Column("(post-norm)", ".3g"), Column("reported", align="l"),
        Column("RoPE θ ratio", ".3g"), Column("reported ", align="l"), Column("σ_max(W_U) ratio", ".3g"),
        Column("reported  ", align="l"), Column("Effective amplification ratio (pre-norm)", ".3g"),
        Column("reported   ", align="l")],
        caption="Numerator's value over the denominator's. The report's ratios are of its own last gains, whose "
                "reading (pre- or post-norm) it does not define; effective amplification is the pre-norm last gain "
                "times σ_max(W_U).")
    for ratio in spec.ratios:
        num, den, pid = ratio.numerator, ratio.denominator, ratio.prompt
        if (num, pid) not in derived or (den, pid) not in derived:
            continue
        key = f"ratio.{num}.{den}"
        values = {}
        for reading in ("last_gain_pre_norm", "last_gain_post_norm"):
            values[reading] = derived[(num, pid)][reading] / derived[(den, pid)][reading]
            out.set(f"{key}.{reading}.{pid}", values[reading])
        thetas = [out.metrics.get(f"{m}.rope_theta") for m in (num, den)]  # set above when the config has one
        theta_ratio = thetas[0] / thetas[1] if all(thetas) else math.nan
        if not math.isnan(theta_ratio):
            out.set(f"{key}.rope_theta", theta_ratio)
        sigma_ratio = by_model[num][0]["wu_sigma_max"] / by_model[den][0]["wu_sigma_max"]
        out.set(f"{key}.wu_sigma_max", sigma_ratio)
        amplification_ratio = derived[(num, pid)]["effective_amplification"] / derived[(den, pid)]["effective_amplification"]
        out.set(f"{key}.effective_amplification.{pid}", amplification_ratio)
        reported = [expected.get(k) for k in (f"{key}.last_gain_pre_norm.{pid}", f"{key}.rope_theta",
                                              f"{key}.wu_sigma_max", f"{key}.effective_amplification.{pid}")]
        reported = ["" if r is None else f"{r:g}" for r in reported]
        table.add(by_model[num][0]["display_name"], by_model[den][0]["display_name"], pid,
                  values["last_gain_pre_norm"], values["last_gain_post_norm"], reported[0], theta_ratio, reported[1],
                  sigma_ratio, reported[2], amplification_ratio, reported[3])
    return table


def _fmt_theta(theta) -> str:
    return f"{theta:,.0f}" if isinstance(theta, (int, float)) else str(theta)


def _pairs_table(spec, derived, by_model, out: Analysis) -> Table:
    table = Table("pairs", "Base vs instruct (same prompts)", [
        Column("Base", align="l"), Column("Instruct", align="l"), Column("Last gain base", ".3f"),
        Column("Last gain instruct", ".3f"), Column("Change", "+.0%"), Column("paired t p", ".3g"),
        Column("Cumulative base", ",.1f"), Column("Cumulative instruct", ",.1f"), Column("Change ", "+.0%")])
    for pair in spec.pairs:
        if pair.base not in by_model or pair.instruct not in by_model:
            continue
        prompts = [r["prompt_id"] for r in by_model[pair.base]]
        base = np.array([derived[(pair.base, p)]["last_gain_pre_norm"] for p in prompts])
        inst = np.array([derived[(pair.instruct, p)]["last_gain_pre_norm"] for p in prompts])
        cum_b = np.array([derived[(pair.base, p)]["cumulative_energy"] for p in prompts])
        cum_i = np.array([derived[(pair.instruct, p)]["cumulative_energy"] for p in prompts])
        pvalue = stats.paired_t_test(inst, base).pvalue if len(prompts) >= 2 and np.ptp(inst - base) > 0 else float("nan")
        key = f"pair.{pair.base}.{pair.instruct}"
        change = inst.mean() / base.mean() - 1
        cum_change = cum_i.mean() / cum_b.mean() - 1
        out.set(f"{key}.last_gain_change", change)
        out.set(f"{key}.cumulative_change", cum_change)
        out.set(f"{key}.paired_t_p", pvalue)
        table.add(pair.base, pair.instruct, base.mean(), inst.mean(), change, pvalue, cum_b.mean(), cum_i.mean(), cum_change)
    return table
