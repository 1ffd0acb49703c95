"""Residual-stream gain (seed 001): per-layer norms, gains, W_U spectral norm, entropy.

`run` stores raw per-layer norms for every (model, prompt); every derived number (gains,
cumulative energy, early explosion, effective amplification, the H18 correlation, the
base-vs-instruct comparison) is computed by `analyze` from those records, so a saved run can
be re-analysed. Definitions are in registry/kinds/residual_gain.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from harness import stats
from harness.experiments.base import RunContext, RunOutput
from harness.models import ActivationCapture, check_finite
from harness.report.figures import pyplot, save_figure
from harness.report.tables import Analysis, Column, Table
from registry.kinds.residual_gain import ResidualGainSpec


# ----------------------------------------------------------------------------- measurement
def spectral_norm(weight: torch.Tensor, chunk: int = 16384) -> float:
    """sigma_max of a (vocab x d) matrix via the d x d Gram matrix in float64 (cheap for tall W)."""
    gram = torch.zeros(weight.shape[1], weight.shape[1], dtype=torch.float64, device=weight.device)
    for block in weight.detach().split(chunk, dim=0):
        block = block.to(torch.float64)
        gram += block.T @ block
    return float(torch.linalg.eigvalsh(gram)[-1].clamp_min(0).sqrt())


def entropy_nats(logits: torch.Tensor) -> float:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum())


def _content_positions(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Positions that are not special tokens (BOS carries outsized norms in many models)."""
    special = torch.tensor([tid in set(tokenizer.all_special_ids) for tid in input_ids.tolist()])
    positions = (~special).nonzero().flatten()
    return positions if positions.numel() else torch.arange(input_ids.numel())


def run(spec: ResidualGainSpec, ctx: RunContext) -> RunOutput:
    records = []
    bar = ctx.progress(total=len(spec.models) * len(spec.prompts), desc="residual gain", unit="prompt")
    for name in spec.models:
        bar.set_postfix_str(f"loading {name}")
        lm = ctx.models.get(name, spec.dtype)
        facts = lm.facts
        sigma = spectral_norm(lm.anatomy.lm_head.weight)
        bar.set_postfix_str(name)
        for prompt in spec.prompts:
            enc = lm.tokenizer(prompt.text, return_tensors="pt", add_special_tokens=spec.add_special_tokens).to(lm.device)
            with torch.no_grad(), ActivationCapture(name, lm.anatomy, residual=True, final_norm=True) as cap:
                logits = lm.model(**enc).logits[0, -1]
            check_finite(logits, name, "logits")
            positions = _content_positions(enc["input_ids"][0].cpu(), lm.tokenizer)
            stream = [t[0].float().cpu() for t in cap.residual_stream()]
            post = cap.get("final_norm.out")[0].float().cpu()
            top = int(logits.argmax())
            records.append({
                "model": name,
                "display_name": lm.entry.display_name,
                "prompt_id": prompt.id,
                "prompt": prompt.text,
                "category": prompt.category,
                "n_tokens": int(enc["input_ids"].shape[1]),
                "norms_last": [float(t[-1].norm()) for t in stream],
                "norms_tokmean": [float(t[positions].norm(dim=-1).mean()) for t in stream],
                "final_norm_out_last": float(post[-1].norm()),
                "final_norm_out_tokmean": float(post[positions].norm(dim=-1).mean()),
                "next_token_entropy": entropy_nats(logits),
                "top_next_token": lm.tokenizer.decode([top]),
                "wu_sigma_max": sigma,
                **{f"arch_{k}": v for k, v in facts.items()},
            })
            bar.update(1)
        ctx.models.release(name)
    bar.close()
    return RunOutput(records=records, curves=_curves(spec, records))


def _curves(spec: ResidualGainSpec, records: list[dict]) -> list[dict]:
    """Wide table for DVC plots: layer, then one column per model (mean last-token norm)."""
    by_model = _mean_norms(records)
    depth = max(len(v) for v in by_model.values())
    return [{"layer": i, **{m: (round(v[i], 6) if i < len(v) else "") for m, v in by_model.items()}} for i in range(depth)]


def _mean_norms(records: list[dict], key: str = "norms_last") -> dict[str, list[float]]:
    grouped = defaultdict(list)
    for r in records:
        grouped[r["model"]].append(r[key])
    return {m: list(np.mean(np.array(v), axis=0)) for m, v in grouped.items()}


# ----------------------------------------------------------------------------- derivation
def derive(record: dict, early_fraction: float, suffix: str = "last") -> dict:
    """The report's quantities from one record's per-layer norms (see the spec docstring)."""
    norms = np.asarray(record[f"norms_{suffix}"], dtype=float)
    gains = norms[1:] / norms[:-1]  # gains[i] = gain of block i
    n_blocks = len(gains)
    early = max(1, math.ceil(early_fraction * n_blocks))
    peak = int(np.argmax(gains[:early]))
    post = record[f"final_norm_out_{suffix}"]
    last_pre = float(gains[-1])
    return {
        "embedding_norm": float(norms[0]),
        "emb_gain": float(gains[0]),
        "last_gain_pre_norm": last_pre,
        "last_gain_post_norm": float(post / norms[-2]),
        "cumulative_energy": float(norms[-1] / norms[0]),
        "largest_early_gain": float(gains[peak]),
        "largest_early_gain_layer": peak,
        "effective_amplification": last_pre * record["wu_sigma_max"],
        "gains": gains.tolist(),
    }


PER_PROMPT = ("last_gain_pre_norm", "last_gain_post_norm", "cumulative_energy", "emb_gain",
              "largest_early_gain", "largest_early_gain_layer", "effective_amplification", "embedding_norm")


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
    early = Table("early", "Early-layer explosion", [
        Column("Model", align="l"), Column("Emb→L0 gain", ".1f"), Column("Largest early gain", ".1f"),
        Column("at block", "d"), Column("Blocks searched", "d")],
        caption=f"Largest gain among the first {spec.early_layers_fraction:.0%} of blocks (block 0 = embedding→layer 0), "
                "for the prompt with the largest value.")
    h18 = Table("h18", "H18: does the last-layer gain rise with next-token entropy?", [
        Column("Model", align="l"), Column("Prompts", "d"), Column("Pearson r", ".3f"), Column("p", ".3g"),
        Column("Spearman ρ", ".3f"), Column("p ", ".3g"), Column("Mean entropy (nats)", ".2f")],
        caption="Across prompts, correlation of the pre-norm last-layer gain with the entropy of the next-token distribution.")
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
                  max(1, math.ceil(spec.early_layers_fraction * first["arch_n_layers"])))

        entropies = [r["next_token_entropy"] for r in rows]
        corr = stats.correlation(gains, entropies)
        for key in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"):
            out.set(f"{model}.h18.{key}", getattr(corr, key))
        h18.add(display, corr.n, corr.pearson_r, corr.pearson_p, corr.spearman_rho, corr.spearman_p, float(np.mean(entropies)))

    out.tables += [summary, arch, early, h18]
    if spec.pairs:
        out.tables.append(_pairs_table(spec, derived, by_model, out))
    out.tables.append(per_prompt)
    if any(math.isnan(row[2]) for row in h18.rows if isinstance(row[2], float)):
        out.notes.append("H18 correlations need at least three prompts with varying values; they are blank otherwise.")
    return out


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


# ----------------------------------------------------------------------------- figures
def figures(spec: ResidualGainSpec, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {r["model"]: r["display_name"] for r in records}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grouped = defaultdict(list)
    for r in records:
        grouped[r["model"]].append(r["norms_last"])
    for model, norms in grouped.items():
        arr = np.array(norms)
        layers = np.arange(arr.shape[1])
        ax.plot(layers, np.median(arr, axis=0), marker=".", label=names[model])
        if arr.shape[0] > 1:
            ax.fill_between(layers, arr.min(axis=0), arr.max(axis=0), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("layer (0 = embedding, i = output of block i-1)")
    ax.set_ylabel("‖h‖ of the last token (log)")
    ax.set_title("Residual-stream norm per layer (median over prompts; band = min–max)")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "norms_per_layer.png"))

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model in grouped:
        rows = [r for r in records if r["model"] == model]
        x = [r["next_token_entropy"] for r in rows]
        y = [derive(r, spec.early_layers_fraction)["last_gain_pre_norm"] for r in rows]
        ax.scatter(x, y, label=names[model], s=18)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("next-token entropy (nats)")
    ax.set_ylabel("last-layer gain (pre-norm)")
    ax.set_title("H18: last-layer gain vs uncertainty, one point per prompt")
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out_dir / "gain_vs_entropy.png"))
    return paths
