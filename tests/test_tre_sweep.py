"""TRE sweep: spec validation, a tiny-profile end-to-end run checked against independent
recomputation, pairing and determinism, generation against transformers, and both NaN policies."""

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import REPO
from harness import stats
from harness.engine import RunSettings
from harness.workflow import run_and_analyze as run_spec
from harness.fsutil import read_jsonl
from harness.kinds.tre_sweep.generation import generate_rows
from harness.models import NonFiniteActivationError, load_model
from harness.kinds.tre_sweep.sampling import uniform_stream
from harness.kinds.tre_sweep.calibration import calibrate
from harness.kinds.tre_sweep.controller import BaselineController
from registry import SpecError, load_spec
from registry.kinds.tre_sweep import FixedParams

SMOL = REPO / "specs" / "tre_sweep_smollm2_local.yaml"
CPU = torch.device("cpu")
# the tiny overlay is applied after --set, so the tiny sizes are changed inside it
E2E = ("profiles.tiny.trials=3", "profiles.tiny.max_new_tokens=40")


def _settings(tmp, *overrides, results="results"):
    return RunSettings(profile="tiny", results_dir=tmp / results, cache_dir=tmp / "cache", device="cpu",
                       show_progress=False, overrides=tuple(overrides))


@pytest.fixture(scope="session")
def tre_run(tmp_path_factory):
    return run_spec(SMOL, _settings(tmp_path_factory.mktemp("tre"), *E2E))


def _records(run):
    records = read_jsonl(run.run_dir / "records.jsonl")
    return [r for r in records if r["record"] == "calibration"], [r for r in records if r["record"] == "generation"]


def _vd(text):
    """Vocab diversity written out again from the documented definition."""
    tokens = [w.replace("’", "'") for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)*", text.lower())]
    return len(set(tokens)) / len(tokens) if tokens else None


def _bd(text):
    tokens = re.findall(r"[^\W_]+(?:['’][^\W_]+)*", text.lower())
    pairs = list(zip(tokens, tokens[1:]))
    return len(set(pairs)) / len(pairs) if pairs else None


# ----------------------------------------------------------------------------- end to end
def test_run_records_cover_the_protocol_and_stay_in_range(tre_run):
    spec = load_spec(SMOL, "tiny", E2E)
    calibrations, gens = _records(tre_run)
    assert len(calibrations) == 1 and calibrations[0]["layer"] == 2 and len(calibrations[0]["neurons"]) == 20
    assert len(gens) == 7 * 3 * 3
    assert {(g["condition"], g["trial"]) for g in gens} == {(c, t) for c in ("neural", "random", "baseline")
                                                           for t in range(3)}
    for g in gens:
        steps = g["n_tokens"] + (g["stop_reason"] == "eos")
        assert len(g["temperature"]) == len(g["top_p"]) == len(g["top_k"]) == steps <= 40
        assert g["stop_reason"] in ("eos", "length") and g["nonfinite_logit_tokens"] == 0
        if g["condition"] == "baseline":
            assert set(g["temperature"]) == {0.7} and set(g["top_p"]) == {0.9} and set(g["top_k"]) == {50}
        else:
            assert all(0.6 <= t <= 0.8 for t in g["temperature"]) and all(0.85 <= p <= 1 for p in g["top_p"])
            assert all(10 <= k <= 60 for k in g["top_k"])
        if g["condition"] == "neural":
            assert len(g["signal"]) == steps and g["signal"][0] == g["signal_raw"][0], "the EMA starts at x_0"
    run = json.loads((tre_run.run_dir / "run.json").read_text())
    assert len(run["spec"]["prompts"]) == 35, "run.json records the prompts read from prompts_file"
    assert run["spec"]["prompts"] == [p.model_dump() for p in spec.prompts]


def test_metrics_are_recomputed_from_the_records(tre_run):
    _, gens = _records(tre_run)
    metrics = json.loads((tre_run.run_dir / "metrics.json").read_text())
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    m = "smollm2_135m_instruct"
    for condition in ("neural", "random", "baseline"):
        rows = [g for g in gens if g["condition"] == condition]
        vds = [v for g in rows if (v := _vd(g["text"])) is not None]
        assert metrics[f"{m}.{condition}.vocab_diversity.mean"] == pytest.approx(np.mean(vds))
        temps = [t for g in rows for t in g["temperature"]]
        assert metrics[f"{m}.params.{condition}.temperature.mean"] == pytest.approx(np.mean(temps))
        assert metrics[f"{m}.params.{condition}.top_k.max"] == max(k for g in rows for k in g["top_k"])
        assert metrics[f"{m}.{condition}.n_generations"] == 21


def test_effect_sizes_equal_cohens_d_from_the_records(tre_run):
    _, gens = _records(tre_run)
    metrics = json.loads((tre_run.run_dir / "metrics.json").read_text())
    m = "smollm2_135m_instruct"
    checked = 0
    for a, b in (("neural", "baseline"), ("neural", "random"), ("random", "baseline")):
        for name, fn in (("vocab_diversity", _vd), ("bigram_diversity", _bd)):
            x = [v for g in gens if g["condition"] == a and (v := fn(g["text"])) is not None]
            y = [v for g in gens if g["condition"] == b and (v := fn(g["text"])) is not None]
            assert metrics[f"{m}.d.{a}_vs_{b}.{name}"] == pytest.approx(stats.cohens_d(x, y))
            checked += stats.cohens_d(x, y) != 0
    assert checked >= 3, "the tiny run must give non-trivial effect sizes for this check to mean anything"
    x = [v for g in gens if g["condition"] == "neural" and (v := _vd(g["text"])) is not None]
    y = [v for g in gens if g["condition"] == "baseline" and (v := _vd(g["text"])) is not None]
    welch = stats.welch_t_test(x, y)
    assert metrics[f"{m}.welch.neural_vs_baseline.vocab_diversity.t"] == pytest.approx(welch.statistic)
    assert metrics[f"{m}.welch.neural_vs_baseline.vocab_diversity.p"] == pytest.approx(welch.pvalue)
    d = stats.cohens_d(x, y)
    assert metrics[f"{m}.required_n.neural_vs_baseline.vocab_diversity"] == stats.required_n_per_group(d)
    assert metrics["power.required_n_per_group.d_0_1"] == 1571


def test_conditions_are_paired_by_seed(tre_run):
    _, gens = _records(tre_run)
    seeds = {}
    for g in gens:
        seeds.setdefault((g["prompt_id"], g["trial"]), set()).add(g["seed"])
    assert all(len(s) == 1 for s in seeds.values()), "every condition of a (prompt, trial) uses the same stream"
    assert len({next(iter(s)) for s in seeds.values()}) == len(seeds), "different (prompt, trial), different stream"


@pytest.mark.slow
def test_identical_parameters_give_identical_text_in_every_condition(tmp_path):
    collapse = ["ranges.temperature.lo=0.7", "ranges.temperature.hi=0.7", "ranges.top_p.lo=0.9",
                "ranges.top_p.hi=0.9", "ranges.top_k.lo=50", "ranges.top_k.hi=50"]
    _, gens = _records(run_spec(SMOL, _settings(tmp_path, *collapse)))
    texts = {}
    for g in gens:
        texts.setdefault((g["prompt_id"], g["trial"]), {})[g["condition"]] = g["text"]
    assert all(len(set(t.values())) == 1 for t in texts.values())
    assert len({t["neural"] for t in texts.values()}) > len(texts) // 2, "the streams differ across prompts/trials"


@pytest.mark.slow
def test_same_seed_gives_the_same_metrics_and_another_seed_does_not(tre_run, tmp_path):
    again = run_spec(SMOL, _settings(tmp_path, *E2E))
    assert (again.run_dir / "metrics.json").read_bytes() == (tre_run.run_dir / "metrics.json").read_bytes()
    assert (again.run_dir / "records.jsonl").read_bytes() == (tre_run.run_dir / "records.jsonl").read_bytes()
    other = run_spec(SMOL, _settings(tmp_path, "seed=1", results="other"))
    assert _records(other)[1][0]["text"] != _records(tre_run)[1][0]["text"]


def test_signal_and_calibration_match_an_independent_hook(tre_run):
    """The neural signal at the first token, recomputed from the prompt alone (no padding)."""
    calibrations, gens = _records(tre_run)
    cal = calibrations[0]
    lm = load_model("smollm2_135m_instruct", "tiny", cache_dir=tre_run.run_dir, device=CPU)
    layer_out = {}
    hook = lm.model.model.layers[cal["layer"]].mlp.register_forward_hook(lambda m, i, o: layer_out.update(v=o))
    spec = load_spec(SMOL, "tiny", E2E)
    special = set(lm.tokenizer.all_special_ids)
    calibration_rows = []
    try:
        for prompt in spec.selected_prompts():
            text = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], tokenize=False,
                                                    add_generation_prompt=True)
            ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lm.model(ids[:, :64])
            acts = layer_out["v"][0].double()
            calibration_rows.append(acts[[t not in special for t in ids[0, :64].tolist()]])
            with torch.no_grad():
                lm.model(ids)
            z = (layer_out["v"][0, -1, cal["neurons"]].double() - torch.tensor(cal["mean"])) / torch.tensor(cal["std"])
            expected = (float(z.abs().mean()) - cal["signal_mean"]) / cal["signal_std"]
            for g in gens:
                if g["condition"] == "neural" and g["prompt_id"] == prompt.id:
                    assert g["signal_raw"][0] == pytest.approx(expected, abs=1e-4)
    finally:
        hook.remove()
    variance = torch.cat(calibration_rows).var(dim=0)
    assert set(variance.topk(20).indices.tolist()) == set(cal["neurons"])
    assert cal["n_tokens"] == sum(len(r) for r in calibration_rows)


@pytest.mark.slow
def test_report_page_shows_reported_beside_reproduced(tmp_path):
    from harness.report.render import build_reports

    spec = REPO / "specs" / "tre_sweep_gemma2_27b.yaml"
    results = tmp_path / "results"
    run_spec(spec, _settings(tmp_path))
    build_reports([spec], results, tmp_path / "reports")
    page = (tmp_path / "reports" / "tre_sweep_gemma2_27b.md").read_text()
    for title in ("Effect sizes", "significance and win rate", "Aggregate metrics", "Cross-trial Jaccard",
                  "What the controller chose", "by prompt category", "Calibration", "Reported vs reproduced"):
        assert f"### {title}" in page or title in page, title
    row = next(line for line in page.splitlines() if line.startswith("| Gemma-2-27B-IT | neural vs baseline | vocab"))
    assert "| 0.197 |" in row
    assert "![param_traces.png](figures/tre_sweep_gemma2_27b/param_traces.png)" in page
    assert (tmp_path / "reports" / "figures" / "tre_sweep_gemma2_27b" / "param_traces.png").is_file()


# ----------------------------------------------------------------------------- generation and NaN
def _tiny(name="llama31_8b"):
    return load_model(name, "tiny", cache_dir=REPO / "unused", device=CPU)


PROMPTS = ["a", "a much longer prompt than the first one", "middle length prompt"]


def test_batched_generation_matches_transformers_greedy_with_left_padding():
    lm = _tiny()
    greedy = BaselineController(FixedParams(temperature=1.0, top_p=1.0, top_k=1), rows=len(PROMPTS))
    rows = generate_rows(lm, "llama31_8b", PROMPTS, greedy, uniform_stream(0, (3, 12)), max_new_tokens=12,
                         nan_policy="error", add_special_tokens=True)
    lm.tokenizer.padding_side = "left"
    enc = lm.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = lm.model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=lm.tokenizer.pad_token_id)
    for i, row in enumerate(rows):
        expected = ref[i, enc["input_ids"].shape[1]:].tolist()
        if lm.tokenizer.eos_token_id in expected:
            expected = expected[:expected.index(lm.tokenizer.eos_token_id)]
        assert row.token_ids == expected
        single = generate_rows(lm, "llama31_8b", [PROMPTS[i]], BaselineController(greedy.params, 1),
                               uniform_stream(0, (1, 12)), max_new_tokens=12, nan_policy="error",
                               add_special_tokens=True)
        assert single[0].token_ids == row.token_ids, "a row's output does not depend on its batch"


def test_nan_logits_error_names_model_point_and_dtype():
    lm = _tiny()
    with torch.no_grad():
        lm.model.lm_head.weight[17] = float("nan")
    with pytest.raises(NonFiniteActivationError) as info:
        generate_rows(lm, "llama31_8b", PROMPTS, BaselineController(FixedParams(), 3), uniform_stream(0, (3, 5)),
                      max_new_tokens=5, nan_policy="error", add_special_tokens=True)
    message = str(info.value)
    assert message == "llama31_8b: 3 non-finite (NaN) values in the output logits (dtype float32), at generation step 0"


def test_nan_logits_are_masked_and_counted():
    lm = _tiny()
    with torch.no_grad():
        lm.model.lm_head.weight[17] = float("nan")
    rows = generate_rows(lm, "llama31_8b", PROMPTS, BaselineController(FixedParams(top_k=260, top_p=1.0), 3),
                         uniform_stream(1, (3, 30)), max_new_tokens=30, nan_policy="mask", add_special_tokens=True)
    for row in rows:
        assert row.nonfinite_logit_tokens == len(row.temperature) > 0, "every sampling step met the NaN logit"
        assert 17 not in row.token_ids and row.stop_reason in ("length", "eos")


def test_all_nan_logits_end_the_rows_under_mask():
    lm = _tiny()
    with torch.no_grad():
        lm.model.lm_head.weight.fill_(float("nan"))
    rows = generate_rows(lm, "llama31_8b", PROMPTS, BaselineController(FixedParams(), 3), uniform_stream(1, (3, 8)),
                         max_new_tokens=8, nan_policy="mask", add_special_tokens=True)
    assert [(r.stop_reason, r.token_ids, r.nonfinite_logit_tokens) for r in rows] == [("nonfinite", [], 1)] * 3


def _poisoned_calibration(nan_policy, layer):
    lm = _tiny()
    with torch.no_grad():
        lm.anatomy.mlp(layer).down_proj.weight[5] = float("nan")  # unit 5 of that MLP's output
    return calibrate(lm, "llama31_8b", PROMPTS, add_special_tokens=True, max_tokens=64, layer=layer,
                     point_kind="mlp_output", top_k=20, aggregate_how="mean_abs_z", batch_size=2,
                     nan_policy=nan_policy)


def test_nan_in_calibration_error_names_model_layer_and_dtype():
    with pytest.raises(NonFiniteActivationError) as info:
        _poisoned_calibration("error", layer=-1)
    message = str(info.value)
    assert "\n" not in message and message.startswith("llama31_8b: ")
    assert message.endswith("non-finite (NaN) values in the MLP output of layer 3 (dtype float32), during calibration")


def test_nan_in_calibration_is_skipped_and_counted_under_mask():
    cal = _poisoned_calibration("mask", layer=3)
    assert 5 not in cal.neurons and len(cal.neurons) == 20
    assert cal.nonfinite_values == cal.n_tokens, "one NaN unit per token"
    assert cal.top5_variance_raw[0] is None and all(v is not None for v in cal.top5_variance_raw[1:])


@pytest.mark.slow
def test_mlp_neurons_point_and_its_refusal_for_moe(tmp_path):
    run = run_spec(SMOL, _settings(tmp_path, "point=mlp_neurons", "profiles.tiny.max_new_tokens=4",
                                   "profiles.tiny.trials=1"))
    cal = _records(run)[0][0]
    assert cal["point_kind"] == "mlp_neurons" and cal["width"] == 128  # the tiny MLP's intermediate size
    moe = REPO / "specs" / "tre_sweep_mixtral_8x22b.yaml"
    with pytest.raises(SpecError) as info:
        run_spec(moe, _settings(tmp_path, "point=mlp_neurons"))
    assert str(info.value) == (f"{moe}: point: mixtral_8x22b_instruct: layer 2: the MLP (MixtralSparseMoeBlock) has no "
                               "single down projection (MoE?); use mlp_output")


def test_layer_out_of_range_is_one_line(tmp_path):
    with pytest.raises(IndexError, match=r"^layer 9 is out of range for a model with 4 layers \(valid: -4..3\)$"):
        run_spec(SMOL, _settings(tmp_path, "layer=9"))
    assert not (tmp_path / "results" / "tre_sweep_smollm2_local").exists()


# ----------------------------------------------------------------------------- specs
PROMPT_FILE = """\
prompts:
  - {id: a1, category: alpha, text: first}
  - {id: a2, category: alpha, text: second}
  - {id: b1, category: beta, text: third}
  - {id: b2, category: beta, text: fourth}
"""
MINIMAL_TRE = """\
kind: tre_sweep
description: test spec
source: {seed: 000_be5a82c48c7f71ab.txt}
models: [llama31_8b]
prompts_file: prompts.yaml
categories: [alpha, beta]
"""


@pytest.fixture
def tre_spec(write_spec):
    write_spec(PROMPT_FILE, "prompts.yaml")
    return lambda extra="", name="spec.yaml": write_spec(MINIMAL_TRE + extra, name)


def _error(path, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_spec_reads_its_prompts(tre_spec):
    spec = load_spec(tre_spec(), "tiny")
    assert [p.id for p in spec.prompts] == ["a1", "a2", "b1", "b2"]
    assert spec.trials == 5 and spec.max_new_tokens == 128 and spec.baseline.top_k == 50
    assert [p.id for p in load_spec(tre_spec("use_per_category: 1\n")).selected_prompts()] == ["a1", "b1"]


@pytest.mark.parametrize("extra, field, message", [
    ("ranges: {temperature: {lo: 0.9, hi: 0.6}}\n", "ranges.temperature", "lo (0.9) must not exceed hi (0.6)"),
    ("ranges: {top_k: {lo: 40, hi: 20}}\n", "ranges.top_k", "lo (40) must not exceed hi (20)"),
    ("ranges: {temperature: {lo: 0, hi: 0.6}}\n", "ranges.temperature", "lo must be > 0 (a temperature), got 0"),
    ("ranges: {top_p: {lo: 0.9, hi: 1.2}}\n", "ranges.top_p", "top_p must lie in (0, 1], got [0.9, 1.2]"),
    ("layer: 1.5\n", "layer", "a fraction of depth must lie in [0, 1), got 1.5 (write an integer for a layer index)"),
    ("prompts_per_category: 3\n", "prompts_file",
     "prompts.yaml: category 'alpha' has 2 prompts, expected 3 (prompts_per_category)"),
    ("categories: [alpha, beta, gamma]\n", "prompts_file", "prompts.yaml: no prompt has category 'gamma'"),
    ("categories: [alpha, betta]\n", "prompts_file",
     "prompts.yaml: prompt 'b1' has category 'beta', which is not in `categories`; did you mean 'betta'?"),
    ("conditions: [neural, baseline, neural]\n", "conditions", "repeated: neural"),
    ("mapping: {name: cubic}\n", "mapping.name", "unknown name 'cubic' (expected one of: 'sigmoid', 'linear_clip', 'reconstructed')"),
    ("prompts: [{id: x, category: alpha, text: y}]\n", "prompts",
     "filled in from prompts_file; do not write it in a spec"),
    ("ema_alpha: 0\n", "ema_alpha", "Input should be greater than 0 (got 0)"),
    ("mapping: {name: reconstructed, centres: {temperature: 0.9, top_p: 0.9, top_k: 20}}\n", "mapping.centres.temperature",
     "0.9 lies outside ranges.temperature [0.6, 0.8]"),
])
def test_bad_specs_fail_in_one_line_naming_file_and_field(tre_spec, extra, field, message):
    path = tre_spec(extra)
    assert _error(path) == f"{path}: {field}: {message}"


def test_missing_or_malformed_prompts_file(tre_spec, write_spec):
    path = tre_spec().with_name("spec.yaml")
    missing = write_spec(MINIMAL_TRE.replace("prompts.yaml", "nope.yaml"), "missing.yaml")
    assert _error(missing) == f"{missing}: prompts_file: file not found: {missing.parent / 'nope.yaml'}"
    write_spec("prompts:\n  - {id: a1, category: alpha}\n", "broken.yaml")
    broken = write_spec(MINIMAL_TRE.replace("prompts.yaml", "broken.yaml"), "broken_spec.yaml")
    assert _error(broken) == (f"{broken}: prompts_file: {broken.parent / 'broken.yaml'}: prompts.0.text: "
                              "required field is missing")
    write_spec(PROMPT_FILE + "  - {id: a1, category: beta, text: again}\n", "dupes.yaml")
    dupes = write_spec(MINIMAL_TRE.replace("prompts.yaml", "dupes.yaml"), "dupes_spec.yaml")
    assert "prompt ids must be unique; repeated: a1" in _error(dupes)
    assert load_spec(path).prompts_file == "prompts.yaml"


def test_recorded_spec_revalidates_without_the_file():
    from registry.kinds import validate_spec

    spec = load_spec(SMOL, "tiny")
    again = validate_spec(spec.model_dump(mode="json"))
    assert again == spec
    with pytest.raises(Exception, match="prompts: missing"):
        validate_spec({**spec.model_dump(mode="json"), "prompts": []})


def test_layer_fraction_resolves_like_the_report():
    spec = load_spec(SMOL)
    assert [spec.layer_for(n) for n in (80, 46, 56, 30, 18, 4)] == [40, 23, 28, 15, 9, 2]
    assert load_spec(SMOL, overrides=["layer=-3"]).layer_for(30) == -3


def test_local_and_paper_specs_share_the_controller_and_prompts():
    keys = ("layer", "point", "top_k_neurons", "aggregate", "ema_alpha", "calibration", "ranges", "mapping",
            "baseline", "conditions", "max_new_tokens", "prompts", "categories", "prompts_per_category")
    specs = sorted((REPO / "specs").glob("tre_sweep_*.yaml"))
    assert len(specs) >= 6
    reference = load_spec(REPO / "specs" / "tre_sweep_deepseek_r1_llama70b.yaml", "paper").model_dump()
    for path in specs:
        if any(probe in path.stem for probe in ("fp16", "int8", "nf4", "reconstructed", "centred")):
            continue  # the float16 and quantisation probes are deliberately small; the mapping variants differ on purpose
        spec = load_spec(path, "paper" if "local" not in path.stem else "local").model_dump()
        assert {k: spec[k] for k in keys} == {k: reference[k] for k in keys}, path.name
    assert load_spec(REPO / "specs" / "tre_sweep_deepseek_r1_llama70b.yaml", "paper").trials == 5


def test_the_reported_neural_means_are_not_jointly_attainable_by_one_signal():
    """One signal drives temperature, top_p and top_k through linear maps, so the means it produces imply one
    signal level; the report's DeepSeek means imply 0.585 / 0.893 / 0.772, which no signal can produce."""
    from harness.kinds.tre_sweep.analysis import implied_signal_levels, jointly_attainable

    spec = load_spec(REPO / "specs" / "tre_sweep_deepseek_r1_llama70b.yaml", "paper")
    levels = implied_signal_levels(spec, {"temperature": 0.717, "top_p": 0.984, "top_k": 21.4})
    assert [round(levels[p], 3) for p in ("temperature", "top_p", "top_k")] == [0.585, 0.893, 0.772]
    assert not jointly_attainable(levels)
    # means the controller does produce (any signal, mapped linearly) imply one level
    u = 0.37
    r = spec.ranges
    produced = {"temperature": r.temperature.lo + u * (r.temperature.hi - r.temperature.lo),
                "top_p": r.top_p.lo + u * (r.top_p.hi - r.top_p.lo), "top_k": r.top_k.hi - u * (r.top_k.hi - r.top_k.lo)}
    assert jointly_attainable(implied_signal_levels(spec, produced))


@pytest.mark.parametrize("stem", ["deepseek_r1_llama70b", "gemma2_27b", "mixtral_8x22b"])
def test_the_reconstructed_mapping_meets_the_reported_means_jointly(stem):
    """Under the reconstructed mapping a calibration-typical signal (u = 0.5) gives every reported mean at once
    (top_k rounded), so the implied levels agree; under the shared linear map of the same model's spec they do not."""
    from harness.kinds.tre_sweep.analysis import implied_signal_levels, jointly_attainable
    from harness.kinds.tre_sweep.signal import params_from_unit

    plain = load_spec(REPO / "specs" / f"tre_sweep_{stem}.yaml", "paper")
    spec = load_spec(REPO / "specs" / f"tre_sweep_{stem}_reconstructed.yaml", "paper")
    model = plain.models[0]
    means = {p: e.value for p in ("temperature", "top_p", "top_k") for e in plain.expected
             if e.metric == f"{model}.params.neural.{p}.mean"}
    assert len(means) == 3
    assert not jointly_attainable(implied_signal_levels(plain, means))
    assert jointly_attainable(implied_signal_levels(spec, means), tolerance=1e-9)
    temperature, top_p, top_k = params_from_unit(torch.tensor([0.5], dtype=torch.float64), spec.ranges,
                                                 spec.mapping.directions, spec.mapping.centres)
    assert float(temperature) == pytest.approx(means["temperature"]) and float(top_p) == pytest.approx(means["top_p"])
    assert int(top_k) == round(means["top_k"])
    low, high = params_from_unit(torch.tensor([0.0, 1.0], dtype=torch.float64), spec.ranges, spec.mapping.directions,
                                 spec.mapping.centres)[0]
    assert (float(low), float(high)) == (spec.ranges.temperature.lo, spec.ranges.temperature.hi)


def test_ranges_centred_on_the_baseline_give_a_typical_token_the_baseline_parameters():
    from harness.kinds.tre_sweep.signal import params_from_unit

    spec = load_spec(REPO / "specs" / "tre_sweep_smollm2_centred_local.yaml", "local")
    default = load_spec(REPO / "specs" / "tre_sweep_smollm2_local.yaml", "local")
    typical = torch.tensor([0.5], dtype=torch.float64)  # sigmoid(0): a calibration-typical signal
    t, p, k = params_from_unit(typical, spec.ranges, spec.mapping.directions)
    assert (float(t), float(p), int(k)) == pytest.approx((spec.baseline.temperature, spec.baseline.top_p, spec.baseline.top_k))
    t, p, k = params_from_unit(typical, default.ranges, default.mapping.directions)
    assert float(p) > default.baseline.top_p and int(k) < default.baseline.top_k  # the design consequence


def test_the_reports_claims_are_decided_by_the_engine_per_prompt():
    from harness import claims as C
    from harness.kinds.tre_sweep import claims as T
    from registry.common import ClaimRef

    centred = load_spec(REPO / "specs" / "tre_sweep_smollm2_centred_local.yaml", "local")
    default = load_spec(REPO / "specs" / "tre_sweep_smollm2_local.yaml", "local")
    rng = np.random.default_rng(0)

    def gens(condition, shift, n_prompts=20):
        return [{"prompt_id": f"p{p}", "trial": t, "vocab_diversity": 0.6 + shift + 0.01 * rng.standard_normal(),
                 "top_p": list(0.93 + 0.01 * rng.standard_normal(8)), "top_k": list(40 + rng.standard_normal(8))}
                for p in range(n_prompts) for t in range(3)]

    by = {("m", "neural"): gens("neural", 0.02), ("m", "baseline"): gens("baseline", 0.0)}

    def decide(claim_id, spec, **entry):
        data = T.ClaimData(spec, by, ["m"], {"m": "M"}, ["neural", "baseline"], {}, {"m.nonfinite_sampling": "no"},
                           "the ranges force it" if spec is default else None)
        ref = ClaimRef(id=claim_id, section="Results", **entry)
        return C.decide(C.Claim(claim_id, "", "", "000", "", T.CATALOGUE[claim_id].evidence(ref, data)))

    raised = decide("neural_raises_diversity_over_baseline", centred, reported={"d": 0.093, "p": 0.386, "n": 175})
    assert raised.verdict == C.REPRODUCED and "20 prompts" in raised.statistic
    assert raised.self_check == C.UNSUPPORTED  # the report's own p 0.386
    null = decide("neural_vs_baseline_not_significant", centred, margin=0.2, reported={"d": 0.093, "n": 175})
    assert null.verdict == C.NOT_REPRODUCED and null.self_check == C.UNSUPPORTED  # its d's interval passes 0.2
    wins = decide("neural_wins_most_prompts", centred, reported={"wins": 20, "prompts": 35})
    assert wins.verdict == C.REPRODUCED and wins.self_check == C.UNSUPPORTED  # 20/35: sign test p 0.5
    assert decide("nonfinite_sampling", centred).verdict == C.UNDERPOWERED  # one run: absence needs three
    # the parameter shift: emergent under centred ranges, by construction under the default ones
    assert decide("tre_raises_top_p_lowers_top_k", centred).verdict == C.REPRODUCED
    assert decide("tre_raises_top_p_lowers_top_k", default).verdict == C.DESIGN


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("centre", [None, 0.9])
def test_unit_for_value_inverts_the_controllers_placement(direction, centre):
    import torch

    from harness.kinds.tre_sweep.signal import _place
    from harness.kinds.tre_sweep.units import unit_for_value

    for value in (0.2, 0.5, 0.9, 1.3, 1.5):
        u = unit_for_value(value, 0.2, 1.5, direction, centre)
        assert 0 <= u <= 1
        assert float(_place(torch.tensor(u, dtype=torch.float64), 0.2, 1.5, direction, centre)) == pytest.approx(value)
