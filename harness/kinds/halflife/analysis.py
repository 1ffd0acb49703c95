"""Half-life, the analysis: per-chunk pressure and routing entropy from records.jsonl, each trajectory's
half-life, fit, slope, cliffs and entropy collapse, their means with t intervals across trajectories,
and the perturbation arm's paired delta."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from harness import stats
from harness.claims import findings_for
from harness.kinds.contract import Analysis, Column, Table
from harness.kinds.halflife import claims as halflife_claims
from harness.kinds.halflife import trajectory as T
from registry.kinds.halflife import HalfLifeSpec

CLAIM_CATALOGUE = halflife_claims.CATALOGUE
PRESSURE_TEXT = {
    "entropy_complement": "1 - H(p)/ln(E) of the router's softmax p over the E experts (1: one expert takes all, 0: uniform)",
    "top1_usage": "the largest routing probability max(p) (between 1/E and 1)",
}


def pressure_layers(spec: HalfLifeSpec, n_layers: int) -> list[int]:
    layers = spec.pressure.layers
    if layers == "all":
        return list(range(n_layers))
    if layers == "middle_third":
        start = n_layers // 3
        return list(range(start, max(start + 1, n_layers - n_layers // 3)))
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"pressure.layers {bad}: the model has {n_layers} MoE layers")
    return list(layers)


def token_pressure(row: dict, spec: HalfLifeSpec, layers: list[int]) -> float:
    if spec.pressure.name == "entropy_complement":
        return float(np.mean([1.0 - row["entropy"][i] for i in layers]))
    return float(np.mean([max(row["usage"][i]) for i in layers]))


def series_by_trajectory(spec: HalfLifeSpec, records: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """(training seed, prompt, seed, arm) -> per-chunk series: pressure (chunk mean and last token), routing entropy
    (normalised, mean over every MoE layer), the same entropy in nats, and the tokens generated. The training seed is
    None for a model measured as loaded."""
    n_layers = len(records[0]["entropy"])
    layers = pressure_layers(spec, n_layers)
    grouped: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in records:
        grouped[(row.get("train_seed"), row["prompt"], row["seed"], row["arm"])][row["chunk"]].append(row)
    out = {}
    for key, chunks in grouped.items():
        ordered = [sorted(chunks[c], key=lambda r: r["index"]) for c in sorted(chunks)]
        experts = len(ordered[0][0]["usage"][0])
        pressure = [[token_pressure(r, spec, layers) for r in rows] for rows in ordered]
        entropy = [float(np.mean([np.mean(r["entropy"]) for r in rows])) for rows in ordered]
        out[key] = {"chunk_mean": [float(np.mean(p)) for p in pressure], "last_token": [p[-1] for p in pressure],
                    "entropy": entropy, "entropy_nats": [e * math.log(experts) for e in entropy],
                    "tokens": tuple(r["token"] for rows in ordered for r in rows)}
    return out


def trajectory_stats(spec: HalfLifeSpec, series: dict[str, list[float]]) -> dict:
    p = series[spec.pressure.aggregate]
    h = series["entropy"]
    fit = T.exponential_fit(p)
    slope = T.linear_slope(p)
    drop, drop_at = T.largest_drop(p)
    early, late = T.thirds(h)
    corr = stats.correlation(p, h)
    return {"p_first": p[0], "p_last": p[-1], "half_life": T.half_life_chunk(p), "fit": fit, "slope": slope.slope,
            "largest_drop": drop, "drop_at": drop_at, "cliffs": T.cliffs(p, spec.analysis.cliff_drop, spec.analysis.cliff_z),
            "h_first": h[0], "h_last": h[-1], "collapse": T.collapse(h), "h_early": early, "h_late": late,
            "converge": T.chunks_to_converge(h, spec.analysis.converge_tolerance), "corr": corr.pearson_r,
            "chunks": len(p),
            "nats_first": series["entropy_nats"][0], "nats_last": series["entropy_nats"][-1]}


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), float("nan")
    low, high = stats.mean_interval(finite)
    return float(np.mean(finite)), low, high


def _mean_r_ci(values: list[float]) -> tuple[float, float, float]:
    """Per-trajectory correlations averaged in Fisher-z space (atanh), the t interval there, mapped back: the mean
    and its interval stay inside [-1, 1]."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), float("nan")
    z = np.arctanh(np.clip(finite, -1 + 1e-12, 1 - 1e-12))
    mean, low, high = _mean_ci(list(z))
    return float(np.tanh(mean)), float(np.tanh(low)), float(np.tanh(high))


def headline_metrics(spec: HalfLifeSpec) -> list[str]:
    keys = [f"baseline.pressure.{k}" for k in ("first", "last", "slope")] + ["baseline.entropy.collapse"]
    if spec.perturbation.enabled:
        keys.append("perturbation.delta.mean")
    return keys


def analyze(spec: HalfLifeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    analysis = Analysis()
    if not records:
        analysis.notes.append("The run has no records.")
        return analysis
    series = series_by_trajectory(spec, records)
    per = {key: trajectory_stats(spec, s) for key, s in series.items()}
    n_layers = len(records[0]["entropy"])
    layers = pressure_layers(spec, n_layers)

    pressure_table = Table("pressure", "Pressure per chunk: first and last chunk, slope, half-life, decay fit, cliffs "
                           "(means over trajectories, 95% t intervals)",
                           [Column("arm", align="l"), Column("trajectories", "d"), Column("first chunk", ".4f"),
                            Column("last chunk", ".4f"), Column("slope per chunk", ".2e"), Column("slope 95% CI", align="l"),
                            Column("half-life reached", align="l"), Column("fit tau ln 2 (chunks)", align="l"),
                            Column("largest drop", ".4f"), Column("at chunk", align="l"), Column("cliffs", "d")])
    entropy_table = Table("entropy", "Routing entropy per chunk (normalised H/ln E, mean over every MoE layer)",
                          [Column("arm", align="l"), Column("first chunk", ".3f"), Column("last chunk", ".3f"),
                           Column("collapse (first-last)/first", ".1%"), Column("early third", ".3f"),
                           Column("late third", ".3f"), Column("chunks to converge", align="l"),
                           Column("first, nats", ".3f"), Column("last, nats", ".3f"),
                           Column("r(pressure, entropy)", ".3f")])
    for arm in spec.arms():
        rows = [v for (train_seed, prompt, seed, a), v in per.items() if a == arm]
        n = len(rows)
        for name, key in (("first", "p_first"), ("last", "p_last"), ("slope", "slope"), ("largest_drop", "largest_drop")):
            mean, low, high = _mean_ci([r[key] for r in rows])
            analysis.set(f"{arm}.pressure.{name}", mean)
            analysis.set(f"{arm}.pressure.{name}.ci_low", low)
            analysis.set(f"{arm}.pressure.{name}.ci_high", high)
        reached = [r["half_life"] for r in rows if r["half_life"] is not None]
        analysis.set(f"{arm}.pressure.half_life_reached", len(reached) / n)
        if reached:
            analysis.set(f"{arm}.pressure.half_life_chunk.median", float(np.median(reached)))
        fits = [r["fit"].half_life for r in rows if r["fit"] is not None]
        fit_mean = float(np.mean(fits)) if fits else None
        analysis.set(f"{arm}.pressure.fit_half_life", fit_mean)
        cliff_count = sum(len(r["cliffs"]) for r in rows)
        analysis.set(f"{arm}.pressure.cliffs", cliff_count)
        for name, key in (("first", "h_first"), ("last", "h_last"), ("collapse", "collapse"), ("early", "h_early"),
                          ("late", "h_late"), ("nats_first", "nats_first"), ("nats_last", "nats_last"),
                          ("pressure_correlation", "corr")):
            mean, low, high = (_mean_r_ci if key == "corr" else _mean_ci)([r[key] for r in rows])
            analysis.set(f"{arm}.entropy.{name}", mean)
            analysis.set(f"{arm}.entropy.{name}.ci_low", low)
            analysis.set(f"{arm}.entropy.{name}.ci_high", high)
        other = "last_token" if spec.pressure.aggregate == "chunk_mean" else "chunk_mean"
        for name, pick in (("first", lambda x: x[0]), ("last", lambda x: x[-1]),
                           ("slope", lambda x: T.linear_slope(x).slope)):
            values = [pick(series[key][other]) for key in series if key[3] == arm]
            analysis.set(f"{arm}.pressure_{other}.{name}", _mean_ci(values)[0])
        converged = [r["converge"] for r in rows if r["converge"] is not None]
        if converged:
            analysis.set(f"{arm}.entropy.chunks_to_converge.median", float(np.median(converged)))
        m = analysis.metrics
        drop_chunks = sorted({r["drop_at"] for r in rows if r["drop_at"] is not None})
        pressure_table.add(arm, n, m.get(f"{arm}.pressure.first"), m.get(f"{arm}.pressure.last"),
                           m.get(f"{arm}.pressure.slope"),
                           _interval(m.get(f"{arm}.pressure.slope.ci_low"), m.get(f"{arm}.pressure.slope.ci_high")),
                           f"{len(reached)}/{n}" + (f" (median chunk {np.median(reached):g})" if reached else
                                                    f" (not in {spec.chunks} chunks)"),
                           f"{fit_mean:.3g} ({len(fits)} of {n} decay)" if fits else f"no decay ({n} of {n})",
                           m.get(f"{arm}.pressure.largest_drop"),
                           ", ".join(map(str, drop_chunks[:6])) or "none", cliff_count)
        entropy_table.add(arm, m.get(f"{arm}.entropy.first"), m.get(f"{arm}.entropy.last"),
                          m.get(f"{arm}.entropy.collapse"), m.get(f"{arm}.entropy.early"), m.get(f"{arm}.entropy.late"),
                          f"median {np.median(converged):g}" if converged else "not converged",
                          m.get(f"{arm}.entropy.nats_first"), m.get(f"{arm}.entropy.nats_last"),
                          m.get(f"{arm}.entropy.pressure_correlation"))
    analysis.tables += [pressure_table, entropy_table]
    if spec.perturbation.enabled:
        analysis.tables.append(_perturbation(spec, series, analysis))
    analysis.tables.append(_scenario(spec, per, analysis))
    analysis.tables.append(_per_trajectory(spec, per))
    for (train_seed, prompt, seed, arm), stats_ in per.items():  # per trajectory, for comparisons across runs
        for name, key in (("pressure_slope", "slope"), ("entropy_collapse", "collapse")):
            analysis.outcomes.setdefault(f"{arm}.{name}", {}).setdefault(
                train_seed if train_seed is not None else 0, {})[f"{prompt}/{seed}"] = stats_[key]
    analysis.findings = findings_for(spec, CLAIM_CATALOGUE, halflife_claims.ClaimData(
        per, {key: s["tokens"] for key, s in series.items()}))
    analysis.facts["pressure"] = f"{spec.pressure.name}, layers {layers}, {spec.pressure.aggregate}"
    analysis.notes += [
        f"Pressure is this project's definition (the report never gives one): {spec.pressure.name} = "
        f"{PRESSURE_TEXT[spec.pressure.name]}, averaged over MoE layers {layers} of {n_layers} "
        f"({spec.pressure.layers}), per chunk the {spec.pressure.aggregate.replace('_', ' ')}.",
        f"Half-life: the first chunk at or below half the first chunk's pressure; the exponential fit is shown only "
        f"where the fitted curve decays with a half-life within ten times the {spec.chunks} chunks. Cliffs: "
        f"chunk-to-chunk drops of at least {spec.analysis.cliff_drop:g} x the first chunk's pressure that also exceed "
        f"the trajectory's median change by {spec.analysis.cliff_z:g} robust standard deviations. Entropy converges from the first chunk "
        f"after which it stays within {spec.analysis.converge_tolerance:g} of its last-third mean.",
        "Tokens are " + ("drawn with temperature {t:g}, top-p {p:g}, top-k {k} (seeded per trajectory)".format(
            t=spec.sampling.temperature, p=spec.sampling.top_p, k=spec.sampling.top_k)
            if spec.sampling.sample else "chosen greedily") + "; each chunk continues the token sequence so far "
        "(no decode and re-encode); the routing of a token is read at the position that predicted it.",
    ]
    return analysis


def _interval(low, high) -> str:
    return f"[{low:.2e}, {high:.2e}]" if low is not None and high is not None else "—"


def _perturbation(spec: HalfLifeSpec, series: dict, analysis: Analysis) -> Table:
    """Perturbed minus baseline, paired by prompt and seed, over chunks 1.. (chunk 0 is identical in both arms)."""
    agg = spec.pressure.aggregate
    pairs = sorted({(t, p, s) for t, p, s, _ in series}, key=lambda k: (k[0] if k[0] is not None else -1, k[1], k[2]))
    base, pert, energy = [], [], []
    for key in pairs:
        b, q = series[(*key, "baseline")][agg][1:], series[(*key, "perturbed")][agg][1:]
        if not b:
            continue
        base.append(float(np.mean(b)))
        pert.append(float(np.mean(q)))
        energy.append(float(np.sum(np.subtract(q, b))))
    table = Table("perturbation", f"Perturbation ({spec.perturbation.text!r} after every chunk) against the baseline "
                  "arm, paired by training seed, prompt and seed, chunks 1 onward",
                  [Column("pairs", "d"), Column("mean pressure, baseline", ".4f"), Column("mean pressure, perturbed", ".4f"),
                   Column("delta", ".4f"), Column("delta 95% CI", align="l"), Column("paired t p", ".3g"),
                   Column("external energy (sum of deltas)", ".4f"), Column("energy 95% CI", align="l")])
    if not base:
        table.caption = "One chunk only: there is no chunk after a perturbation."
        return table
    if len(base) >= 2 and np.ptp(np.subtract(pert, base)) > 0:
        test = stats.paired_t_test(pert, base)
        delta, low, high, p = test.mean_difference, test.ci_low, test.ci_high, test.pvalue
    else:
        delta, low, high, p = float(np.mean(np.subtract(pert, base))), None, None, None
    e_mean, e_low, e_high = _mean_ci(energy)
    analysis.set("perturbation.delta.mean", delta)
    analysis.set("perturbation.delta.ci_low", low)
    analysis.set("perturbation.delta.ci_high", high)
    analysis.set("perturbation.delta.pvalue", p)
    analysis.set("perturbation.external_energy.mean", e_mean)
    table.add(len(base), float(np.mean(base)), float(np.mean(pert)), delta,
              f"[{low:.4f}, {high:.4f}]" if low is not None else "—", p, e_mean,
              f"[{e_low:.4f}, {e_high:.4f}]" if math.isfinite(e_low) else "—")
    return table


def _per_trajectory(spec: HalfLifeSpec, per: dict) -> Table:
    table = Table("trajectories", "Each trajectory",
                  [Column("training seed", align="l"), Column("prompt", align="l"), Column("seed", "d"),
                   Column("arm", align="l"), Column("first", ".4f"),
                   Column("last", ".4f"), Column("half-life chunk", align="l"), Column("slope", ".2e"),
                   Column("entropy first", ".3f"), Column("entropy last", ".3f")])
    for (train_seed, prompt, seed, arm), r in sorted(per.items(), key=lambda kv: (
            kv[0][0] if kv[0][0] is not None else -1, *kv[0][1:])):
        table.add("—" if train_seed is None else train_seed, prompt, seed, arm, r["p_first"], r["p_last"],
                  str(r["half_life"]) if r["half_life"] is not None else "not reached", r["slope"], r["h_first"],
                  r["h_last"])
    return table


def _scenario(spec: HalfLifeSpec, per: dict, analysis: Analysis) -> Table:
    """Which of the report's three expected scenarios for learned routing the run's trajectories look like (baseline
    arm): a description, not a verdict (the report's scenarios are predictions for a pretrained Mixtral-8x7B)."""
    m = analysis.metrics
    rows = [v for (_, _, _, arm), v in per.items() if arm == "baseline"]
    n = len(rows)
    reached = sum(r["half_life"] is not None for r in rows)
    decays = sum(r["fit"] is not None for r in rows)
    cliffs = int(m.get("baseline.pressure.cliffs", 0))
    scenario = ("C (sharp cliffs)" if reached * 2 >= n and cliffs else "A (natural decay)" if reached * 2 >= n and
                decays * 2 >= n else "B (infinite half-life)")
    table = Table("scenario", "The report's three scenarios for learned routing: which one this run looks like", [
        Column("scenario", align="l"), Column("half-life reached", align="l"), Column("fit decays", align="l"),
        Column("cliffs", "d")],
        caption="A (decay in 15-25 chunks) when most trajectories reach half their first pressure and decay in the "
                "fit, C (cliffs) when most reach it and the run has cliffs, else B (no decay). This project's rule; "
                "the report states the scenarios as predictions, so they are described here, not decided.")
    table.add(scenario, f"{reached}/{n}", f"{decays}/{n}", cliffs)
    return table
