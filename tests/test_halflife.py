"""Half-life kind: router capture against transformers' own router logits, trajectory statistics on
series with known answers, the paired perturbation arm, bad input, and a tiny end-to-end run."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO
from harness.kinds.halflife import trajectory as T
from harness.kinds.halflife.analysis import analyze, series_by_trajectory
from harness.kinds.halflife.executor import trajectory
from harness.models import load_model
from registry import load_spec
from registry.errors import SpecError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy():
    return load_model("mixtral_toy", "tiny", cache_dir=REPO, device=CPU)


def _spec(**overrides):
    sets = [f"{k}={v}" for k, v in overrides.items()]
    return load_spec(REPO / "specs" / "halflife_toy.yaml", "tiny", sets)


def test_recorded_routing_equals_transformers_router_logits_of_the_predicting_position(toy):
    spec = _spec(chunks=3, chunk_tokens=4)
    rows = trajectory(spec, toy, spec.prompts[0], 42, "baseline")
    prompt = torch.randint(0, toy.model.config.vocab_size, (10,), generator=torch.Generator().manual_seed(42)).tolist()
    sequence = prompt + [r["token"] for r in rows]
    with torch.no_grad():
        out = toy.model(input_ids=torch.tensor([sequence]), output_router_logits=True)
    n = len(sequence)
    for k, row in enumerate(rows):
        position = len(prompt) - 1 + k  # the position whose output chose token k
        for layer, logits in enumerate(out.router_logits):
            usage = torch.softmax(logits.view(1, n, -1)[0, position], -1)
            assert row["usage"][layer] == pytest.approx(usage.tolist(), abs=2e-5)
            entropy = float(-(usage * usage.log()).sum()) / math.log(usage.numel())
            assert row["entropy"][layer] == pytest.approx(entropy, abs=2e-5)
        assert row["token"] == int(out.logits[0, position].argmax())  # greedy


def test_the_perturbed_arm_shares_chunk_zero_and_then_feeds_the_perturbation(toy):
    spec = _spec(chunks=3, chunk_tokens=3)
    base = trajectory(spec, toy, spec.prompts[0], 43, "baseline")
    pert = trajectory(spec, toy, spec.prompts[0], 43, "perturbed")
    assert [r["token"] for r in base if r["chunk"] == 0] == [r["token"] for r in pert if r["chunk"] == 0]
    assert [r["usage"] for r in base if r["chunk"] == 0] == [r["usage"] for r in pert if r["chunk"] == 0]
    assert [r["usage"] for r in base if r["chunk"] == 1] != [r["usage"] for r in pert if r["chunk"] == 1]
    assert len(base) == len(pert) == 9


def test_a_dense_model_is_refused_in_one_line():
    spec = _spec(model="llama31_8b", chunks=1, chunk_tokens=1)
    lm = load_model("llama31_8b", "tiny", cache_dir=REPO, device=CPU)
    with pytest.raises(SpecError, match="returns no router logits .* needs a mixture-of-experts model"):
        trajectory(spec, lm, spec.prompts[0], 42, "baseline")


def test_pressure_layers_outside_the_model_and_bad_sizes_are_refused():
    with pytest.raises(SpecError, match=r"pressure.layers: \[7\] not among the model's layers 0..3"):
        _spec(**{"pressure.layers": "[1, 7]"})
    with pytest.raises(SpecError, match="chunks"):
        _spec(chunks=0)


def test_nan_in_router_logits_is_named(toy, monkeypatch):
    from harness.kinds.halflife import routing
    from harness.models import NonFiniteActivationError

    with pytest.raises(NonFiniteActivationError, match=r"mixtral_toy: 1 non-finite \(NaN\)"):
        routing.layer_stats(torch.tensor([0.1, float("nan"), 0.3, 0.2]), "mixtral_toy", 2)


# ---------------------------------------------------------------- statistics with known answers

def test_half_life_and_exponential_fit_recover_a_known_decay():
    series = [0.2 + 0.5 * math.exp(-t / 10) for t in range(50)]
    assert T.half_life_chunk(series) == 13  # 0.2 + 0.5 e^(-t/10) <= 0.35 first at t = 13 (12.04 rounded up)
    fit = T.exponential_fit(series)
    assert fit.tau == pytest.approx(10, rel=1e-4) and fit.p_inf == pytest.approx(0.2, abs=1e-5)
    assert fit.half_life == pytest.approx(10 * math.log(2), rel=1e-4)
    rng, truth, covered = np.random.default_rng(0), 10 * math.log(2), 0
    for _ in range(200):  # the 95% interval covers the true half-life about 95% of the time
        fit = T.exponential_fit([v + e for v, e in zip(series, rng.normal(0, 0.01, 50))])
        covered += fit.ci_low < truth < fit.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_a_constant_or_rising_series_has_no_half_life_and_no_decay_fit():
    flat = [0.6404] * 49 + [0.6403]
    assert T.half_life_chunk(flat) is None
    assert T.exponential_fit([0.2 + 0.01 * t for t in range(30)]) is None
    assert T.linear_slope([0.5] * 10).slope == 0.0


def test_slope_cliffs_collapse_and_convergence():
    line = [1.0 - 0.02 * t for t in range(20)]
    slope = T.linear_slope([v + e for v, e in zip(line, np.random.default_rng(1).normal(0, 0.001, 20))])
    assert slope.ci_low < -0.02 < slope.ci_high
    steps = [0.8] * 5 + [0.5] * 5 + [0.48] * 5
    assert T.cliffs(steps, 0.1) == [5]  # 0.3 >= 0.08; the 0.02 drop at chunk 10 is not a cliff
    noisy = [0.5 + e for e in np.random.default_rng(2).normal(0, 0.02, 40)]
    noisy[20:] = [v - 0.2 for v in noisy[20:]]  # one real cliff among noise of the cliff_drop floor's size
    assert T.cliffs(noisy, 0.05, z=0) != [20]  # the floor alone calls noise cliffs
    assert T.cliffs(noisy, 0.05, z=3.5) == [20]
    assert T.largest_drop(steps) == (pytest.approx(0.3), 5)
    entropy = [0.95 - 0.42 * (1 - math.exp(-t / 5)) for t in range(50)]
    assert T.collapse(entropy) == pytest.approx((0.95 - entropy[-1]) / 0.95)
    converge = T.chunks_to_converge(entropy, 0.02)
    assert 10 < converge < 25 and all(abs(v - T.thirds(entropy)[1]) <= 0.02 for v in entropy[converge:])


def _records(pressures: dict, experts: int = 4, layers: int = 3) -> list[dict]:
    """Synthetic records whose entropy_complement pressure per chunk is the given series (one token per chunk)."""
    rows = []
    for (prompt, seed, arm), series in pressures.items():
        for chunk, p in enumerate(series):
            rows.append({"prompt": prompt, "seed": seed, "arm": arm, "chunk": chunk, "index": 0, "token": 0,
                         "piece": "", "entropy": [1 - p] * layers, "margin": [0.0] * layers,
                         "usage": [[1 / experts] * experts] * layers})
    return rows


def test_the_analysis_pairs_arms_and_tests_the_perturbation_delta():
    spec = _spec(chunks=5, chunk_tokens=1, seeds="[1, 2, 3]")
    base = {("random10", s, "baseline"): [0.6, 0.5, 0.4, 0.25, 0.2] for s in (1, 2, 3)}
    pert = {("random10", s, "perturbed"): list(np.add([0.6, 0.5, 0.4, 0.25, 0.2], [0, 0.1 * s / 3, 0.1 * s / 3, 0.1, 0.1]))
            for s in (1, 2, 3)}
    analysis = analyze(spec, _records({**base, **pert}))
    m = analysis.metrics
    assert m["baseline.pressure.first"] == pytest.approx(0.6)
    assert m["baseline.pressure.slope"] == pytest.approx(np.polyfit(range(5), [0.6, 0.5, 0.4, 0.25, 0.2], 1)[0])
    assert m["baseline.pressure.half_life_reached"] == 1.0 and m["baseline.pressure.half_life_chunk.median"] == 3
    deltas = [np.mean([0.1 * s / 3, 0.1 * s / 3, 0.1, 0.1]) for s in (1, 2, 3)]
    assert m["perturbation.delta.mean"] == pytest.approx(np.mean(deltas))
    assert m["perturbation.external_energy.mean"] == pytest.approx(np.mean([4 * d for d in deltas]))
    assert m["baseline.pressure_last_token.first"] == pytest.approx(0.6)  # the other aggregate is recorded too
    assert m["perturbation.delta.ci_low"] < m["perturbation.delta.mean"] < m["perturbation.delta.ci_high"]
    series = series_by_trajectory(spec, _records(base))
    assert series[(None, "random10", 1, "baseline")]["chunk_mean"] == pytest.approx([0.6, 0.5, 0.4, 0.25, 0.2])


def test_top1_usage_pressure_reads_the_largest_routing_probability():
    spec = _spec(**{"pressure.name": "top1_usage", "pressure.layers": "all"})
    rows = _records({("random10", 42, "baseline"): [0.5, 0.5]})
    rows[0]["usage"] = [[0.7, 0.1, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1], [0.25] * 4]
    series = series_by_trajectory(spec, rows)[(None, "random10", 42, "baseline")]
    assert series["chunk_mean"][0] == pytest.approx(np.mean([0.7, 0.4, 0.25]))


@pytest.mark.slow
def test_the_toy_spec_runs_end_to_end_on_the_tiny_profile(tmp_path):
    from harness.engine import RunSettings
    from harness.workflow import run_and_analyze

    settings = RunSettings(profile="tiny", results_dir=tmp_path, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False)
    summary = run_and_analyze(REPO / "specs" / "halflife_toy.yaml", settings)
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (summary.run_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 6 * 4  # seeds x arms x chunks x tokens
    assert {"baseline.pressure.first", "perturbation.delta.mean", "baseline.entropy.collapse"} <= set(metrics)
    assert (summary.run_dir / "figures" / "trajectories.png").is_file()
