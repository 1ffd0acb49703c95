"""Tiny-profile end-to-end runs of the residual-gain specs, checked against independent recomputation."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO
from harness.engine import RunSettings
from harness.workflow import run_and_analyze as run_spec
from harness.fsutil import read_jsonl
from harness.models.tiny import build_tiny_model
from registry import load_spec
from registry.catalog import model_entry

PAPER = REPO / "specs" / "residual_gain_paper.yaml"


def _reference(model_name: str, text: str) -> dict:
    """Norms and gains recomputed with plain transformers outputs, not the harness's hooks."""
    source = model_entry(model_name).sources["tiny"]
    model, tok = build_tiny_model(source.architecture, source.config, source.init_seed, torch.float32)
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, output_hidden_states=True)
    hs = [h[0, -1].norm().item() for h in out.hidden_states]  # hs[-1] is after the final norm
    backbone = model.gpt_neox if hasattr(model, "gpt_neox") else model.model
    norm_attr = "final_layer_norm" if hasattr(backbone, "final_layer_norm") else "norm"
    setattr(backbone, norm_attr, torch.nn.Identity())
    with torch.no_grad():
        pre_last = model(**ids, output_hidden_states=True).hidden_states[-1][0, -1].norm().item()
    weight = model.get_output_embeddings().weight.double()
    early = math.ceil(0.25 * (len(hs) - 1))  # the spec's early_layers_fraction over the blocks
    return {
        "plateau_norm": float(np.median(hs[early + 1:-1])),  # hs[-1] (post-norm) is never in the plateau
        "last_gain_pre_norm": pre_last / hs[-2],
        "last_gain_post_norm": hs[-1] / hs[-2],
        "cumulative_energy": pre_last / hs[0],
        "emb_gain": hs[1] / hs[0],
        "embedding_norm": hs[0],
        "wu_sigma_max": torch.linalg.matrix_norm(weight, ord=2).item(),
        "entropy": torch.distributions.Categorical(logits=out.logits[0, -1].double()).entropy().item(),
    }


def test_run_directory_is_complete(tiny_paper_run):
    run_dir = tiny_paper_run.run_dir
    for name in ("metrics.json", "records.jsonl", "run.json", "curves.csv", "figures/norms_per_layer.png",
                 "figures/gain_vs_entropy.png"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["profile"] == "tiny" and run["seed"] == 0 and len(run["spec_hash"]) == 64
    assert {"torch", "transformers", "statsmodels"} <= set(run["versions"])
    assert set(run["models"]) == set(load_spec(PAPER, "tiny").models)
    assert len(read_jsonl(run_dir / "records.jsonl")) == 8 * 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert not list(run_dir.parent.glob(".*staging*")), "no staging folders are left behind"


@pytest.mark.parametrize("model", ["llama31_8b", "pythia_6_9b", "gemma_7b", "gemma2_9b", "mixtral_8x22b_instruct"])
def test_gains_match_independently_recomputed_norms(tiny_paper_run, model, tmp_path):
    if model not in load_spec(PAPER, "tiny").models:  # mixtral is not in this spec; run it directly
        settings = RunSettings(profile="tiny", results_dir=tmp_path, cache_dir=tmp_path, device="cpu", show_progress=False)
        run_dir = run_spec(PAPER, RunSettings(**{**settings.__dict__, "overrides": (f"models=[{model}]", "pairs=[]", "ratios=[]")})).run_dir
    else:
        run_dir = tiny_paper_run.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for prompt_id, text in (("capital_france", "The capital of France is"),
                            ("quick_fox", "The quick brown fox jumps over the lazy dog.")):
        ref = _reference(model, text)
        for key in ("last_gain_pre_norm", "last_gain_post_norm", "cumulative_energy", "emb_gain", "embedding_norm",
                    "plateau_norm"):
            assert metrics[f"{model}.{key}.{prompt_id}"] == pytest.approx(ref[key], rel=1e-4), key
        assert metrics[f"{model}.next_token_entropy.{prompt_id}"] == pytest.approx(ref["entropy"], rel=1e-4)
        assert metrics[f"{model}.effective_amplification.{prompt_id}"] == pytest.approx(
            ref["last_gain_pre_norm"] * ref["wu_sigma_max"], rel=1e-4)
    assert metrics[f"{model}.wu_sigma_max"] == pytest.approx(ref["wu_sigma_max"], rel=1e-6)


def test_cumulative_energy_is_the_product_of_block_gains(tiny_paper_run):
    from harness.kinds.residual_gain.analysis import derive

    for record in read_jsonl(tiny_paper_run.run_dir / "records.jsonl"):
        derived = derive(record, 0.25)
        assert math.prod(derived["gains"]) == pytest.approx(derived["cumulative_energy"], rel=1e-9)
        assert derived["gains"][0] == derived["emb_gain"] and derived["gains"][-1] == derived["last_gain_pre_norm"]


def test_base_vs_instruct_pair_is_reported(tiny_paper_run):
    metrics = json.loads((tiny_paper_run.run_dir / "metrics.json").read_text())
    base = [metrics[f"llama31_8b.last_gain_pre_norm.{p}"] for p in ("capital_france", "quick_fox")]
    inst = [metrics[f"llama31_8b_instruct.last_gain_pre_norm.{p}"] for p in ("capital_france", "quick_fox")]
    assert metrics["pair.llama31_8b.llama31_8b_instruct.last_gain_change"] == pytest.approx(sum(inst) / sum(base) - 1)


def test_cross_model_ratios_are_of_independently_recomputed_gains(tiny_paper_run):
    metrics = json.loads((tiny_paper_run.run_dir / "metrics.json").read_text())
    for num, den, prompt_id, text in (("llama31_8b", "mistral7b_v01", "capital_france", "The capital of France is"),
                                      ("llama31_8b", "llama2_7b", "quick_fox", "The quick brown fox jumps over the lazy dog.")):
        a, b = _reference(num, text), _reference(den, text)
        for reading in ("last_gain_pre_norm", "last_gain_post_norm"):
            assert metrics[f"ratio.{num}.{den}.{reading}.{prompt_id}"] == pytest.approx(a[reading] / b[reading], rel=1e-4)
    thetas = [model_entry(m).sources["tiny"].config["rope_theta"] for m in ("llama31_8b", "llama2_7b")]
    assert metrics["ratio.llama31_8b.llama2_7b.rope_theta"] == pytest.approx(thetas[0] / thetas[1]) == 50


@pytest.mark.slow
def test_same_spec_profile_and_seed_give_the_same_metrics(tmp_path):
    spec = REPO / "specs" / "residual_gain_local.yaml"
    runs = []
    for folder in ("a", "b"):
        settings = RunSettings(profile="tiny", results_dir=tmp_path / folder, cache_dir=tmp_path / "cache",
                               device="cpu", show_progress=False)
        runs.append((run_spec(spec, settings).run_dir / "metrics.json").read_text())
    assert runs[0] == runs[1]
    metrics = json.loads(runs[0])
    assert "smollm2_135m_instruct.h18.pearson_r" in metrics and "gemma3_270m.h18.spearman_rho" in metrics


@pytest.mark.slow
def test_a_crash_leaves_the_previous_result_untouched(tmp_path, monkeypatch):
    settings = RunSettings(profile="tiny", results_dir=tmp_path, cache_dir=tmp_path / "cache", device="cpu",
                           show_progress=False, overrides=("models=[llama2_7b]", "pairs=[]", "ratios=[]"))
    run_dir = run_spec(PAPER, settings).run_dir
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    import harness.kinds.residual_gain.executor as executor

    def crash(*args):
        raise RuntimeError("simulated crash while measuring")

    monkeypatch.setattr(executor, "entropy_nats", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_spec(PAPER, settings)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before
    # nothing half-written is left beside it (the run directory's lock file stays, hidden and ignored)
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache" and not p.name.endswith(".lock")] == [run_dir.name]
