"""Alignment kind: CKA invariance, Procrustes on a planted map, token pairing by character offset,
injection that reproduces the native forward, scores and levels by hand, bad input, and a tiny run."""

import json
import math

import pytest
import torch

from conftest import REPO
from harness.kinds.alignment import maps as M
from harness.kinds.alignment.analysis import level
from harness.kinds.alignment.executor import fit_map
from harness.kinds.alignment.inject import distinct_2, greedy, repetition_rate
from harness.kinds.alignment.states import Encoded, encode, layer_states, pair_positions
from harness.models import load_model
from registry import load_spec
from registry.errors import SpecError
from registry.kinds.alignment import resolve_layer

CPU = torch.device("cpu")
SPEC = REPO / "specs" / "alignment_procrustes_local.yaml"


def _spec(*sets):
    return load_spec(SPEC, "tiny", list(sets))


def _orthogonal(d, seed):
    return torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


def test_linear_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling_but_cosine_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64)
    y = x @ torch.randn(24, 32, generator=g, dtype=torch.float64) + 0.5 * torch.randn(300, 32, generator=g, dtype=torch.float64)
    q = _orthogonal(24, 1)
    base = M.linear_cka(x, y)
    assert 0 < base < 1
    assert M.linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert M.linear_cka(3.7 * x @ q, y) == pytest.approx(base, abs=1e-10)
    wide = M.random_semi_orthogonal(24, 32, seed=3).weight.double()  # orthonormal rows: into a wider space
    assert M.linear_cka(x @ wide, y) == pytest.approx(base, abs=1e-6)
    assert M.linear_cka(x, x) == pytest.approx(1.0)
    # ... while cosine against a square target moves under the same rotation
    square = x @ _orthogonal(24, 5)
    assert M.cosine(x, square) != pytest.approx(M.cosine(x @ q, square), abs=1e-3)


def test_procrustes_recovers_a_planted_rotation_with_shift_and_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 16, generator=g) * 2 + 1
    q = _orthogonal(16, 2).float()
    y = 5 * (x - x.mean(0)) @ q + 3
    fitted = M.procrustes(x[:400], y[:400])
    metrics = M.alignment_metrics(fitted(x[400:]), x[400:], y[400:])
    assert metrics["cosine"] > 0.9999 and metrics["relative_mse"] < 1e-6
    assert torch.allclose(fitted.weight, q, atol=1e-4)
    # the unaligned map copies shared leading dimensions
    pad = M.pad_truncate(3, 5)(torch.tensor([[1.0, 2.0, 3.0]]))
    assert pad.tolist() == [[1.0, 2.0, 3.0, 0.0, 0.0]]
    assert M.pad_truncate(5, 2)(torch.tensor([[1.0, 2, 3, 4, 5]])).tolist() == [[1.0, 2.0]]


def test_procrustes_on_fewer_pairs_than_the_width_is_refused_naming_the_field():
    spec = _spec()
    x, y = torch.randn(10, 16), torch.randn(10, 20)
    with pytest.raises(SpecError, match=r"calibration.texts.*10 fitting pairs are fewer than the width 20"):
        fit_map(spec, "procrustes", x, y, "a layer 1 -> b layer 2")
    allowed = _spec("calibration.rank_deficient=allow")
    assert fit_map(allowed, "procrustes", x, y, "w").weight.shape == (16, 20)


def test_tokens_pair_where_both_tokenizers_end_at_the_same_character():
    a = Encoded(ids=[1, 10, 11, 12], ends=[-1, 3, 7, 12])  # BOS, "The", " cat", " sat."
    b = Encoded(ids=[20, 21, 22, 23, 24], ends=[2, 3, 7, 10, 12])  # "Th", "e", " cat", " sa", "t."
    assert pair_positions(a, b) == ([1, 2, 3], [1, 2, 4])


def test_layer_fractions_resolve_to_the_reports_layers_on_32_layer_models():
    assert [resolve_layer(f, 32) for f in (0, 0.25, 0.5, 0.75, 1)] == [0, 8, 16, 24, 32]
    assert [resolve_layer(f, 18) for f in (0, 0.25, 0.5, 0.75, 1)] == [0, 5, 9, 14, 18]


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("smollm2_135m_instruct", "tiny", cache_dir=REPO, device=CPU)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_injecting_a_models_own_states_reproduces_its_native_next_token_distribution(tiny_llama, layer):
    """Above the injected layer everything the last position sees comes from the injected stream, so the first
    predicted distribution equals the native one at any layer (layer 0: the whole generation is native)."""
    lm = tiny_llama
    ids = encode(lm, "The capital of France is", add_bos=True).ids
    own = layer_states(lm, ids, [layer])[layer]
    native_tokens, native_first = greedy(lm, 5, prompt_ids=ids)
    tokens, first = greedy(lm, 5, states=own, layer=layer)
    assert torch.allclose(first, native_first, atol=1e-4)
    if layer == 0:
        assert tokens == native_tokens
    # and it is the injected stream that matters: other states change the prediction
    _, other = greedy(lm, 1, states=torch.randn_like(own) * own.norm(dim=-1, keepdim=True).mean(), layer=layer)
    assert not torch.allclose(other, native_first, atol=1e-3)


def test_injection_after_the_last_block_goes_through_the_final_norm(tiny_llama):
    lm = tiny_llama
    n = lm.anatomy.n_layers
    ids = encode(lm, "Hello there", add_bos=True).ids
    own = layer_states(lm, ids, [n])[n]
    _, native_first = greedy(lm, 1, prompt_ids=ids)
    _, first = greedy(lm, 1, states=own, layer=n)
    assert torch.allclose(first, native_first, atol=1e-4)


def test_repetition_distinct_and_levels_by_hand():
    assert repetition_rate([5, 6, 5, 6, 5, 6]) == pytest.approx(3 / 5)  # (5,6) (6,5) new; then 3 repeats
    assert repetition_rate([1, 2, 3, 4]) == 0.0
    assert distinct_2([7, 7, 7, 7]) == pytest.approx(1 / 3)
    spec = _spec()
    ref = 2.0
    row = {"nll": ref + math.log(1.5), "repetition": 0.1}
    assert level(spec, row, ref) == "fluent"
    assert level(spec, {**row, "nll": ref + math.log(20)}, ref) == "some coherent phrases"
    assert level(spec, {**row, "nll": ref + math.log(1000)}, ref) == "garbage"
    assert level(spec, {**row, "repetition": 0.9}, ref) == "token loop"
    assert level(spec, {"nll": None, "repetition": 0.0}, ref) == "empty"


def test_bad_alignment_specs_are_refused_in_one_line(write_spec):
    base = SPEC.read_text()
    with pytest.raises(SpecError, match="source_model and target_model must differ"):
        load_spec(write_spec(base.replace("target_model: gemma3_270m", "target_model: smollm2_135m_instruct"),
                             "alignment_procrustes_local.yaml"), "local")
    with pytest.raises(SpecError, match="layers"):
        load_spec(write_spec(base.replace("layers: [0.0, 0.25, 0.5, 0.75, 1.0]", "layers: [0.5, 1.5]"),
                             "alignment_procrustes_local.yaml"), "local")
    with pytest.raises(SpecError, match="thresholds must increase"):
        load_spec(SPEC, "local", ["quality.thresholds=[4, 2, 8, 16]"])


@pytest.mark.slow
def test_the_procrustes_spec_runs_end_to_end_on_the_tiny_profile(tmp_path):
    from harness.engine import RunSettings
    from harness.workflow import run_and_analyze

    settings = RunSettings(profile="tiny", results_dir=tmp_path, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False)
    summary = run_and_analyze(SPEC, settings)
    records = [json.loads(line) for line in (summary.run_dir / "records.jsonl").read_text().splitlines()]
    spec = _spec()
    injected = [r for r in records if r["record"] == "generation" and r["condition"] == "injected"]
    assert len(injected) == 2 * len(spec.layers) * len(spec.maps) * len(spec.prompts)
    fits = [r for r in records if r["record"] == "fit"]
    assert len(fits) == 2 * len(spec.layers) * len(spec.maps)
    procrustes = [r for r in fits if r["map"] == "procrustes"]
    assert all(r["relative_mse"] < 1.5 for r in procrustes)
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    assert "smollm2_135m_instruct_to_gemma3_270m.procrustes.depth050.cosine" in metrics
    assert (summary.run_dir / "figures" / "alignment_procrustes_local_injection.png").is_file()


# ---------------------------------------------------------------------------------------------- adapters
from harness.kinds.alignment import adapters as A  # noqa: E402
from registry.kinds.alignment import Adapter  # noqa: E402


@pytest.mark.parametrize("kind", ["linear", "affine", "low_rank"])
def test_an_adapter_recovers_a_planted_linear_map(kind):
    """Two synthetic state sets related by a known linear map (plus a shift for affine): the adapter,
    started from a random map (low rank: from a base one rank short of the planted map), learns it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 12, generator=g)
    planted = torch.randn(12, 16, generator=g) / 12 ** 0.5
    y = x @ planted + (torch.randn(16, generator=g) if kind == "affine" else 0)
    identity = M.StateMap(torch.zeros(12, 16))  # normalisation off: mu 0, scale 1
    if kind == "low_rank":
        u, s, vh = torch.linalg.svd(planted, full_matrices=False)
        identity = M.StateMap(u[:, :-2] @ torch.diag(s[:-2]) @ vh[:-2])  # the planted map without its last 2 directions
    config = Adapter(type=kind, rank=2, init="procrustes")
    adapter = A.StateAdapter(config, identity, seed=0)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=0.02)
    for _ in range(1500):
        optimizer.zero_grad()
        (adapter(x[:600]) - y[:600]).pow(2).mean().backward()
        optimizer.step()
    with torch.no_grad():
        metrics = M.alignment_metrics(adapter(x[600:]), x[600:], y[600:])
    assert metrics["cosine"] > 0.999 and metrics["cka_after"] > 0.999 and metrics["relative_mse"] < 1e-3


def test_infonce_starts_at_ln_batch_and_reaches_zero_on_matched_pairs():
    a = torch.randn(20, 8)
    assert float(A.infonce(a, torch.randn(20, 8), temperature=1e6)) == pytest.approx(math.log(20), abs=1e-4)
    assert float(A.infonce(a, a, temperature=0.01)) < 1e-3


def test_early_stopping_fires_after_patience_epochs_without_min_delta_improvement():
    stop = A.EarlyStop(patience=2, min_delta=0.001)
    assert [stop(v) for v in (1.0, 0.9, 0.8995, 0.8999)] == [False, False, False, True]


def test_text_split_at_a_space_and_layer_0_injection_loss_equals_the_native_loss(tiny_llama):
    assert A.split_text("one two three four", 0.5) == ("one two", " three four")
    lm = tiny_llama
    context, rest = "The capital of", " France is Paris"
    ctx_ids = encode(lm, context, add_bos=True).ids
    cont = lm.tokenizer(rest, add_special_tokens=False)["input_ids"]
    own = layer_states(lm, ctx_ids, [0])[0]
    with torch.no_grad():
        native = lm.model(input_ids=torch.tensor([ctx_ids + cont])).logits[0, len(ctx_ids) - 1:-1]
        expected = torch.nn.functional.cross_entropy(native.float(), torch.tensor(cont))
        assert float(A.lm_loss(lm, 0, own, cont)) == pytest.approx(float(expected), abs=1e-4)


@pytest.mark.slow
def test_the_adapter_spec_trains_evaluates_every_epoch_and_lowers_the_validation_loss(tmp_path):
    from harness.engine import RunSettings
    from harness.workflow import run_and_analyze

    settings = RunSettings(profile="tiny", results_dir=tmp_path, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False)
    summary = run_and_analyze(REPO / "specs" / "alignment_adapters_local.yaml", settings)
    run = json.loads((summary.run_dir / "run.json").read_text())
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    import csv
    rows = list(csv.DictReader((summary.run_dir / "curves.csv").open()))
    epochs = [r for r in rows if r["event"] == "epoch"]
    first = [r for r in epochs if r["adapter"] == "adapter0" and r["epoch"] == "1"]
    assert {r["direction"] for r in first} == {"smollm2_135m_instruct_to_gemma3_270m", "gemma3_270m_to_smollm2_135m_instruct"}
    multi = [r for r in epochs if r["adapter"] == "adapter2" and r["epoch"] == "1" and r["direction"].startswith("smollm2")]
    assert len(multi) == 2  # one row per aligned layer
    for direction in ("smollm2_135m_instruct_to_gemma3_270m", "gemma3_270m_to_smollm2_135m_instruct"):
        series = [float(r["val_loss"]) for r in epochs if r["adapter"] == "adapter0" and r["direction"] == direction]
        assert min(series[1:]) < series[0]  # training lowers the held-out loss
        assert f"adapter0.{direction}.best_val_loss" in metrics
    assert run["state"]["trained"]["adapter0.smollm2_135m_instruct_to_gemma3_270m.seed0"]["status"] == "trained"


def test_calibration_pairs_are_capped_per_text_by_a_seeded_choice(tiny_llama):
    from harness.kinds.alignment.states import paired_states

    other = load_model("gemma3_270m", "tiny", cache_dir=REPO, device=CPU)
    texts = ["the cat sat on the mat and then it slept", "a report about people today"]
    full = paired_states(tiny_llama, other, texts, [1], [1], "span_end", True)
    capped = paired_states(tiny_llama, other, texts, [1], [1], "span_end", True, per_text=5, seed=3)
    again = paired_states(tiny_llama, other, texts, [1], [1], "span_end", True, per_text=5, seed=3)
    assert len(full[2]) > 10 and capped[2] == [0] * 5 + [1] * 5
    assert torch.equal(capped[0][1], again[0][1])
    # every kept pair is one of the full set's pairs
    assert all(any(torch.equal(row, f) for f in full[0][1]) for row in capped[0][1])


def test_no_map_between_different_widths_needs_a_declared_unaligned_map(write_spec):
    text = SPEC.read_text().replace("unaligned_map: pad_truncate\n", "")
    path = write_spec(text, "alignment_procrustes_local.yaml")
    with pytest.raises(SpecError, match=r"unaligned_map: the widths differ \(smollm2_135m_instruct 576, gemma3_270m 640\)"):
        load_spec(path, "local")
    spec = load_spec(path, "local", ["maps=[procrustes]"])  # no 'none' rows: nothing to declare
    with pytest.raises(SpecError, match="unaligned_map"):
        fit_map(spec, "none", torch.zeros(4, 3), torch.zeros(4, 5), "w")


def test_nan_in_a_layer_of_the_source_is_named_with_model_and_layer(tiny_llama):
    from harness.models import NonFiniteActivationError

    layer = tiny_llama.anatomy.layers[1]

    def poison(module, args, output):
        return (output[0] * float("nan"), *output[1:]) if isinstance(output, tuple) else output * float("nan")

    handle = layer.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteActivationError, match=r"smollm2_135m_instruct: .*NaN.*the output of layer 1"):
            layer_states(tiny_llama, encode(tiny_llama, "Hello", add_bos=True).ids, [2])
    finally:
        handle.remove()


def test_a_repetitive_generation_is_never_fluent():
    from harness.kinds.alignment.analysis import level

    spec = load_spec(SPEC, "local")
    likely = {"nll": 1.0, "distinct_2": 1.0}
    assert level(spec, {**likely, "repetition": 0.0}, 1.0) == "fluent"
    assert level(spec, {**likely, "repetition": 0.15}, 1.0) == "partial sentences"
    assert level(spec, {**likely, "repetition": 0.4}, 1.0) == "fragments"
    assert level(spec, {**likely, "repetition": 0.5}, 1.0) == "token loop"
    assert level(spec, {"nll": 7.0, "repetition": 0.0}, 1.0) == "garbage"  # the worse reading wins
    assert level(spec, {"nll": None, "repetition": 0.0}, 1.0) == "empty"


def test_findings_come_from_the_engine_on_the_levels():
    """Synthetic records: every generation, with or without a map, is garbage; none loops at the last layer. The
    engine then finds 'fails' and 'Procrustes fails' over 30 generations, the loop claim reversed, the middle-layer
    claim undetectable (all depths equal) and CKA a design consequence."""
    from harness import claims as C
    from harness.kinds.alignment.analysis import analyze

    spec = load_spec(SPEC, "local", ["layers=[0.0, 0.5, 1.0]"])
    src, tgt = spec.source_model, spec.target_model
    records = [{"record": "generation", "condition": "baseline", "source": m, "target": m, "map": "baseline",
                "layer_fraction": None, "source_layer": None, "target_layer": None, "prompt_index": i, "prompt": p,
                "tokens": [1], "text": "ok", "nll": 1.0, "repetition": 0.0, "distinct_2": 1.0, "kl_first": 0.0}
               for m in (src, tgt) for i, p in enumerate(spec.prompts)]
    for a, b in ((src, tgt), (tgt, src)):
        for map_name in ("none", "procrustes"):
            for depth in (0.0, 0.5, 1.0):
                for i, p in enumerate(spec.prompts):
                    records.append({"record": "generation", "condition": "injected", "source": a, "target": b,
                                    "map": map_name, "layer_fraction": depth, "source_layer": 0, "target_layer": 0,
                                    "prompt_index": i, "prompt": p, "tokens": [1, 2], "text": "x",
                                    "nll": 9.0 + 0.01 * i, "repetition": 0.0, "distinct_2": 1.0, "kl_first": 1.0})
                records.append({"record": "fit", "source": a, "target": b, "map": map_name, "layer_fraction": depth,
                                "source_layer": 0, "target_layer": 0, "fit_pairs": 10, "heldout_pairs": 5,
                                "cosine": 0.5, "relative_mse": 0.5, "cka_before": 0.3, "cka_after": 0.3})
    found = {f.claim: f for f in analyze(spec, records).findings}
    assert found["no_map_fails"].verdict == C.REPRODUCED and "30 generations" in found["no_map_fails"].statistic
    assert found["procrustes_fails"].verdict == C.REPRODUCED
    assert found["last_layer_loops"].verdict == C.REVERSED  # 0 of 10 loop
    assert found["middle_layers_best"].verdict in (C.NOT_DETECTED, C.UNDERPOWERED)
    assert found["cka_shows_procrustes"].verdict == C.DESIGN
    assert found["no_map_fails"].self_check == C.UNSUPPORTED  # the report's 8 of 10 cells cannot show >= 80%


def test_fractions_landing_on_the_same_layer_and_empty_prompts_are_refused():
    with pytest.raises(SpecError, match=r"adapters.0.layers: \[0.5, 0.52\] land on layers \[9, 9\] of gemma3_270m"):
        load_spec(REPO / "specs" / "alignment_adapters_local.yaml", "local", ["adapters.0.layers=[0.5, 0.52]"])
    with pytest.raises(SpecError, match="prompts.0"):
        load_spec(SPEC, "local", ["prompts=['']"])


def test_centred_metrics_do_not_reward_predicting_the_mean():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 8, generator=g) + 10  # far from the origin: raw cosine of the mean is high
    mean_only = y.mean(0).expand_as(y)
    metrics = M.alignment_metrics(mean_only, y, y)
    assert metrics["cosine"] > 0.9 and abs(metrics["r2"]) < 1e-9
    perfect = M.alignment_metrics(y, y, y)
    assert perfect["r2"] == pytest.approx(1.0) and perfect["centred_cosine"] == pytest.approx(1.0)
