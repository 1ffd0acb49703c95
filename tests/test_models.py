"""Tiny models, anatomy, activation capture, NaN detection, and the hub loading path."""

import pytest
import torch

from harness.models import ActivationCapture, NonFiniteActivationError, load_model
from harness.models.tiny import TINY_DEFAULTS, build_tiny_model

CPU = torch.device("cpu")


def _tiny(name, tmp_path):
    return load_model(name, "tiny", cache_dir=tmp_path, device=CPU)


def test_tiny_models_are_deterministic_per_seed():
    a, tok = build_tiny_model("llama", {}, 5, torch.float32)
    b, _ = build_tiny_model("llama", {}, 5, torch.float32)
    c, _ = build_tiny_model("llama", {}, 6, torch.float32)
    ids = tok("determinism", return_tensors="pt")
    with torch.no_grad():
        la, lb, lc = a(**ids).logits, b(**ids).logits, c(**ids).logits
    assert torch.equal(la, lb) and not torch.allclose(la, lc)


def test_tiny_tokenizer_round_trips_any_text():
    _, tok = build_tiny_model("gpt_neox", {}, 0, torch.float32)
    text = "Ünïcode & symbols: ∑ 𝔘 — ok"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("architecture", sorted(TINY_DEFAULTS))
def test_residual_capture_matches_hidden_states(architecture):
    """Block outputs equal transformers' hidden_states, except the last, which HF returns post-norm."""
    from harness.models.anatomy import find_anatomy

    model, tok = build_tiny_model(architecture, {}, 1, torch.float32)
    anatomy = find_anatomy(model)
    ids = tok(["a short prompt", "and a longer second prompt"], return_tensors="pt", padding=True)
    with torch.no_grad(), ActivationCapture("m", anatomy, residual=True, final_norm=True) as cap:
        hidden = model(**ids, output_hidden_states=True).hidden_states
    stream = cap.residual_stream()
    assert len(stream) == len(hidden) == anatomy.n_layers + 1
    for ours, theirs in zip(stream[:-1], hidden[:-1]):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(cap.get("final_norm.in"), stream[-1])
    torch.testing.assert_close(cap.get("final_norm.out"), hidden[-1])
    assert not torch.allclose(stream[-1], hidden[-1]), "hidden_states[-1] is post-norm, the block output is not"


def test_mlp_router_capture_and_layer_errors(tmp_path):
    moe = _tiny("mixtral_8x22b_instruct", tmp_path)
    ids = moe.tokenizer("route me", return_tensors="pt")
    with torch.no_grad(), ActivationCapture("mixtral", moe.anatomy, mlp_layers=[-1], router=True) as cap:
        moe.model(**ids)
    n_tokens, n_experts = ids["input_ids"].shape[1], moe.model.config.num_local_experts
    assert cap.get("router.0").shape == (n_tokens, n_experts)
    assert cap.get(f"mlp.{moe.anatomy.n_layers - 1}").shape[-1] == moe.model.config.hidden_size
    with pytest.raises(AttributeError, match="no single down projection"):
        ActivationCapture("mixtral", moe.anatomy, mlp_inner_layers=[0])

    dense = _tiny("llama31_8b", tmp_path)
    with torch.no_grad(), ActivationCapture("llama", dense.anatomy, mlp_inner_layers=[1]) as cap:
        dense.model(**dense.tokenizer("neurons", return_tensors="pt"))
    assert cap.get("mlp_inner.1").shape[-1] == dense.model.config.intermediate_size
    with pytest.raises(IndexError, match=r"layer 9 is out of range for a model with 4 layers \(valid: -4..3\)"):
        ActivationCapture("llama", dense.anatomy, mlp_layers=[9])
    with pytest.raises(ValueError, match="not a mixture-of-experts model"):
        ActivationCapture("llama", dense.anatomy, router=True)


def test_nan_in_a_layer_is_named_with_model_layer_and_dtype(tmp_path):
    lm = _tiny("gemma_7b", tmp_path)
    with torch.no_grad():
        lm.anatomy.mlp(2).down_proj.weight[0, 0] = float("nan")
    ids = lm.tokenizer("poisoned", return_tensors="pt")
    with pytest.raises(NonFiniteActivationError) as info, torch.no_grad(), \
            ActivationCapture("gemma_7b", lm.anatomy, residual=True):
        lm.model(**ids)
    assert str(info.value).startswith("gemma_7b: ")
    assert "non-finite (NaN) values in the output of layer 2 (dtype float32)" in str(info.value)


def test_architecture_facts(tmp_path):
    facts = {n: _tiny(n, tmp_path).facts for n in ("pythia_6_9b", "gemma_7b", "apertus_8b", "llama31_8b", "gemma3_270m")}
    assert (facts["pythia_6_9b"]["norm_type"], facts["pythia_6_9b"]["mlp_type"]) == ("LayerNorm", "GELU")
    assert (facts["gemma_7b"]["norm_type"], facts["gemma_7b"]["mlp_type"]) == ("RMSNorm", "GeGLU")
    assert facts["apertus_8b"]["mlp_type"] == "xIELU"
    assert facts["llama31_8b"]["mlp_type"] == "SwiGLU" and facts["llama31_8b"]["rope_theta"] == 500000.0
    assert facts["gemma3_270m"]["rope_theta"] == "sliding 10000/full 1e+06"


def test_hub_source_loads_a_local_folder_like_the_hub(tmp_path, monkeypatch):
    """The paper profile's code path (`from_pretrained` by id + revision), on a tiny saved model."""
    from registry.catalog import HFSource, ModelEntry
    import harness.models.loading as loading

    model, tok = build_tiny_model("mistral", {}, 3, torch.float32)
    folder = tmp_path / "tiny-mistral"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    entry = ModelEntry(name="x", display_name="X", family="mistral",
                       sources={"paper": HFSource(type="hf", repo_id=str(folder), dtype="float32", n_layers=4, hidden_size=64)})
    monkeypatch.setattr(loading, "model_entry", lambda name: entry)
    lm = loading.load_model("x", "paper", cache_dir=tmp_path, device=CPU)
    ids = tok("same weights", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**ids).logits, model(**ids).logits)
    assert lm.provenance()["source"]["type"] == "hf"


def test_hub_source_failure_is_one_line(tmp_path, monkeypatch):
    from registry.catalog import HFSource, ModelEntry
    from harness.models import ModelFetchError
    import harness.models.loading as loading

    entry = ModelEntry(name="x", display_name="X", family="llama",
                       sources={"paper": HFSource(type="hf", repo_id="nobody/does-not-exist-anywhere", n_layers=4, hidden_size=64)})
    monkeypatch.setattr(loading, "model_entry", lambda name: entry)
    with pytest.raises(ModelFetchError, match=r"^could not load 'nobody/does-not-exist-anywhere' \(revision main\)") as info:
        loading.load_model("x", "paper", cache_dir=tmp_path, device=CPU)
    assert "\n" not in str(info.value)


def test_quantization_without_bitsandbytes_is_one_clear_error(tmp_path, monkeypatch):
    import builtins

    from harness.models import ModelFetchError
    import harness.models.loading as loading

    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(ModelFetchError, match=r"nf4 quantization needs bitsandbytes: pip install 'bitsandbytes>=0.50'"):
        loading.load_model("llama31_8b", "tiny", cache_dir=tmp_path, device=CPU, quantization="nf4")
    monkeypatch.setattr(builtins, "__import__", real_import)
    config = loading._bitsandbytes_config("nf4", torch.bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"


def test_catalog_dimensions_are_checked_against_the_loaded_model(tmp_path, monkeypatch):
    from registry.catalog import HFSource, ModelEntry
    from harness.models import ModelFetchError
    import harness.models.loading as loading

    model, tok = build_tiny_model("llama", {}, 3, torch.float32)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    entry = ModelEntry(name="x", display_name="X", family="llama", sources={
        "paper": HFSource(type="hf", repo_id=str(tmp_path / "m"), dtype="float32", n_layers=32, hidden_size=64)})
    monkeypatch.setattr(loading, "model_entry", lambda name: entry)
    with pytest.raises(ModelFetchError, match="x: the loaded model has 4 layers and hidden size 64, the catalog says 32 and 64"):
        loading.load_model("x", "paper", cache_dir=tmp_path, device=CPU)
