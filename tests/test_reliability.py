"""Run-time reliability: cached state keyed by code, one identity per spec, one-line run-time errors,
concurrency-safe writes, bounded sizes, caches that heal themselves."""

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import MINIMAL_RESIDUAL, REPO, copy_code, one_line_error
from harness.codegraph import code_digest, run_roots
from harness.fsutil import RunLocked, atomic_write_text, atomic_write_with, exclusive, replace_dir, restore_interrupted, staging_dir
from harness.kinds.bridge.training import train
from registry import load_spec
from registry.errors import SpecError
from registry.kinds.bridge import TrainingSpec


def _harness(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- 1. cached state keyed by the code

def test_the_code_digest_changes_when_any_file_the_run_executes_changes(tmp_path):
    copy_code(tmp_path)
    roots = tuple(run_roots("bridge", load_spec(REPO / "specs" / "sst2_8tok.yaml", "tiny").code_parts()))
    before = code_digest(roots, "bridge", tmp_path)
    assert before == code_digest(roots, "bridge", REPO)
    for unused in ("analysis.py", "flow_bridge.py"):  # not executed by this run: analysis, a part it does not load
        path = tmp_path / "harness/kinds/bridge" / unused
        path.write_text(path.read_text() + "\n# edited\n")
        code_digest.cache_clear()
        assert code_digest(roots, "bridge", tmp_path) == before
    training = tmp_path / "harness/kinds/bridge/training.py"
    training.write_text(training.read_text() + "\n# edited\n")
    code_digest.cache_clear()
    assert code_digest(roots, "bridge", tmp_path) != before


def test_the_state_folder_depends_on_spec_models_and_code(monkeypatch):
    from harness import engine

    spec = load_spec(REPO / "specs" / "sst2_8tok.yaml", "tiny")
    first, _ = engine.state_dir_for(Path("/c"), spec, "tiny")
    assert engine.state_dir_for(Path("/c"), spec, "tiny")[0] == first
    edited = load_spec(REPO / "specs" / "sst2_8tok.yaml", "tiny", overrides=["training.lr=0.5"])
    assert engine.state_dir_for(Path("/c"), edited, "tiny")[0] != first
    monkeypatch.setattr(engine, "code_digest", lambda *a, **k: "0" * 64)
    assert engine.state_dir_for(Path("/c"), spec, "tiny")[0] != first


def _tiny_training(tmp_path, steps=6):
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    data = torch.randn(16, 3)

    def loss(step):
        value = step.item_mean(module(data[step.local]).pow(2).mean())
        return {"total": value, "lm": value}

    spec = TrainingSpec(steps=steps, batch_size=4, warmup_steps=1, checkpoint_every=2, quick_eval_every=100)
    return train(module, loss, n_items=16, steps=steps, spec=spec, lr=0.1, seed=0,
                 checkpoint=tmp_path / "m.pt", label="m"), module


def test_training_says_whether_it_trained_resumed_or_reused_the_cached_state(tmp_path):
    first, module = _tiny_training(tmp_path)
    assert first.status == {"status": "trained", "from_step": 0, "steps": 6}
    again, module_again = _tiny_training(tmp_path)
    assert again.status["status"] == "reused" and again.status["from_step"] == 6
    assert torch.equal(module.weight, module_again.weight)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["step"], state["log"] = 2, state["log"][:2]
    torch.save(state, tmp_path / "m.pt")
    resumed, _ = _tiny_training(tmp_path)
    assert resumed.status == {"status": "resumed", "from_step": 2, "steps": 6}


# ---------------------------------------------------------------- 5. corrupt cache entries heal

def test_a_truncated_checkpoint_is_named_discarded_and_retrained(tmp_path):
    clean, module = _tiny_training(tmp_path)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match=r"corrupt checkpoint.*m\.pt"):
        healed, healed_module = _tiny_training(tmp_path)
    assert healed.status["status"] == "trained" and "m.pt" in healed.status["discarded_checkpoint"]
    assert torch.equal(module.weight, healed_module.weight)  # the same weights as a clean run


def test_a_corrupt_sender_state_entry_is_recomputed(tmp_path):
    from harness.kinds.bridge import sender_states as S
    from harness.models import load_model

    lm = load_model("smollm2_135m_instruct", "tiny", cache_dir=tmp_path, device=torch.device("cpu"))
    texts = ["one text", "another, longer text"]
    first = S.sender_states(lm, texts, 1, tmp_path)
    [entry] = (tmp_path / "sender_states").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:50])
    with pytest.warns(UserWarning, match="corrupt sender-state cache entry"):
        again = S.sender_states(lm, texts, 1, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert S.sender_states(lm, texts, 1, tmp_path)[1].shape == first[1].shape  # the rewritten entry reads back


# ---------------------------------------------------------------- 2. the file name is the spec's identity

def test_a_name_that_differs_from_the_file_name_is_refused(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "name: other_spec\n", "my_spec.yaml")
    with pytest.raises(SpecError, match=r"name: must equal the file name 'my_spec'"):
        load_spec(path)
    with pytest.raises(SpecError, match="must equal the file name"):
        load_spec(write_spec(MINIMAL_RESIDUAL, "my_spec.yaml"), overrides=["name=elsewhere"])
    assert load_spec(write_spec(MINIMAL_RESIDUAL + "name: my_spec\n", "my_spec.yaml")).name == "my_spec"


def test_report_refuses_a_run_directory_of_another_spec(tmp_path):
    from harness.analyze import SavedRunError, load_run

    run_dir = tmp_path / "residual_gain_local"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"name": "sst2_8tok", "profile": "local", "spec": {}}))
    (run_dir / "records.jsonl").write_text("")
    with pytest.raises(SavedRunError, match="records a run of 'sst2_8tok'"):
        load_run(run_dir, REPO / "specs" / "residual_gain_local.yaml")


# ---------------------------------------------------------------- 3. one-line run-time errors

def test_a_spec_that_is_not_utf8_is_one_line_and_validate_goes_on(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(MINIMAL_RESIDUAL.replace("test spec", "caf\xe9").encode("latin-1"))
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL_RESIDUAL)
    result = _harness("validate", str(tmp_path))
    assert result.returncode == 2
    assert f"error: {bad}: not UTF-8 text (byte 0xe9" in result.stderr
    assert f"ok     {good}" in result.stdout and "1 of 2 spec files failed" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    result = _harness("run", "specs/residual_gain_local.yaml", "--profile", "tiny", "--device", "cuda",
                      "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    assert "no CUDA device" in one_line_error(result, 1)
    assert not (tmp_path / "r" / "residual_gain_local").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_results_folder_that_cannot_be_written_fails_before_any_work(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _harness("run", "specs/residual_gain_local.yaml", "--profile", "tiny", "--results-dir", str(locked),
                          "--cache-dir", str(tmp_path / "c"))
        assert f"cannot write to {locked}" in one_line_error(result, 1)
    finally:
        locked.chmod(0o700)


def test_too_little_free_space_fails_before_any_work(tmp_path, monkeypatch):
    from collections import namedtuple

    from harness import fsutil

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 10 * 2**20, 10 * 2**20))
    with pytest.raises(fsutil.WriteFailed, match=r"has 10 MiB free, this run needs about 64 MiB"):
        fsutil.check_writable(tmp_path, 64 * 2**20)


def test_a_file_where_the_results_folder_should_be_is_one_line(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    result = _harness("run", "specs/residual_gain_local.yaml", "--profile", "tiny",
                      "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "c"))
    assert str(tmp_path / "results") in one_line_error(result, 1)


def test_corrupt_saved_runs_are_named_by_report_and_list(tmp_path):
    results = tmp_path / "results"
    for name, files in {"residual_gain_local": {"run.json": "{not json", "records.jsonl": ""},
                        "sst2_8tok": {"run.json": json.dumps({"name": "sst2_8tok", "profile": "local",
                                                              "spec": {"name": "sst2_8tok", "kind": "bridge"}}),
                                      "records.jsonl": "{broken\n"}}.items():
        (results / name).mkdir(parents=True)
        for file, text in files.items():
            (results / name / file).write_text(text)
    out = tmp_path / "reports"
    result = _harness("report", "--results-dir", str(results), "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{results / 'residual_gain_local' / 'run.json'}: unreadable" in result.stderr
    assert f"{results / 'sst2_8tok' / 'records.jsonl'}: unreadable" in result.stderr
    assert not out.exists()
    listed = _harness("list", "--results-dir", str(results))
    assert "run.json: unreadable" in one_line_error(listed, 1)


# ---------------------------------------------------------------- 4. concurrency

def test_simultaneous_atomic_writes_of_one_file_never_fail_or_mix(tmp_path):
    target = tmp_path / "state.bin"
    errors = []

    def writer(i: int):
        try:
            for _ in range(20):
                atomic_write_with(target, lambda tmp: tmp.write_bytes(bytes([i]) * 4096))
                atomic_write_text(tmp_path / "text.txt", str(i) * 100)
        except Exception as exc:  # noqa: BLE001 - any failure is the defect under test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = target.read_bytes()
    assert len(data) == 4096 and len(set(data)) == 1
    assert len(set((tmp_path / "text.txt").read_text())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin", "text.txt"]  # no temporary left behind


def test_a_second_run_of_the_same_directory_stops_with_one_line(tmp_path):
    final = tmp_path / "results" / "spec"
    with exclusive(final, "the run directory"):
        with pytest.raises(RunLocked, match=r"the run directory .*spec is in use by another run"):
            with exclusive(final, "the run directory"):
                pass
    with exclusive(final, "the run directory"):  # released: free again
        pass


def test_orphaned_staging_folders_are_cleaned_and_an_interrupted_swap_is_undone(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "a").write_text("old")
    orphan = staging_dir(final)
    (orphan / "half").write_text("x")
    fresh = staging_dir(final)
    (fresh / "a").write_text("new")
    os.replace(final, final.with_name(".run.previous"))  # a swap interrupted between its two renames
    restore_interrupted(final)
    assert (final / "a").read_text() == "old"
    assert not orphan.exists() and not fresh.exists()
    again = staging_dir(final)
    (again / "a").write_text("new")
    replace_dir(again, final)
    assert (final / "a").read_text() == "new"


# ---------------------------------------------------------------- 6. and 7. bounds and smaller holes

@pytest.mark.parametrize("field, value", [("bridge.soft_tokens", 1_000_000_000), ("training.batch_size", 10**6),
                                          ("bridge.resampler.dim", 10**7), ("task.eval_items", 10**9)])
def test_sizes_have_upper_bounds(field, value):
    with pytest.raises(SpecError, match=field.rsplit(".", 1)[-1]):
        load_spec(REPO / "specs" / "sst2_8tok.yaml", overrides=[f"{field}={value}"])


def test_extends_outside_the_spec_folder_is_refused(tmp_path, write_spec):
    outside = tmp_path.parent / f"{tmp_path.name}_outside.yaml"
    outside.write_text(MINIMAL_RESIDUAL)
    try:
        for ref in (str(outside), f"../{outside.name}"):
            path = write_spec(f"extends: {ref}\n", "child.yaml")
            with pytest.raises(SpecError, match="extends: .* is outside"):
                load_spec(path)
    finally:
        outside.unlink()


def test_run_refuses_a_spec_whose_base_is_invalid_even_if_the_profile_overlay_hides_it(tmp_path):
    spec = tmp_path / "hidden.yaml"
    spec.write_text(MINIMAL_RESIDUAL.replace("models: [llama31_8b]", "models: [no_such_model]")
                    + "profiles:\n  tiny: {models: [llama31_8b]}\n")
    result = _harness("run", str(spec), "--profile", "tiny", "--results-dir", str(tmp_path / "r"),
                      "--cache-dir", str(tmp_path / "c"))
    assert "unknown model 'no_such_model'" in one_line_error(result, 2)


def test_a_prompt_longer_than_the_context_warns():
    from harness.models import load_model
    from harness.models import decoding as D
    from harness.models import lm as L

    lm = load_model("smollm2_135m_instruct", "tiny", cache_dir=Path("/nonexistent"), device=torch.device("cpu"))
    limit = L.context_length(lm)
    ids = torch.zeros(limit + 1, dtype=torch.long)
    with pytest.warns(UserWarning, match=f"exceeds the model's context of {limit}"):
        D.encode(lm, [L.embed(lm, ids)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        D.encode(lm, [L.embed(lm, ids[:4])])


def test_the_dequantised_cache_is_keyed_by_code_and_checked_for_truncation(tmp_path):
    from harness.models.gguf_wheel import _cache_is_whole, dequantised_dir
    from registry.catalog import model_entry

    source = model_entry("smollm2_135m_instruct").source("local")
    folder = dequantised_dir(source, tmp_path)
    assert folder.name.startswith(f"SmolLM2-135M-Instruct.Q4_1-{source.sha256[:12]}-float32-")
    assert not _cache_is_whole(folder)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / "complete").write_text(json.dumps({"weights_bytes": 100}))
    assert _cache_is_whole(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 60)  # truncated
    assert not _cache_is_whole(folder)


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_models_load_quantised_on_the_cpu(quantization):
    from harness.models import load_model

    lm = load_model("smollm2_135m_instruct", "tiny", cache_dir=REPO, device=torch.device("cpu"),
                    quantization=quantization)
    assert lm.load_info["quantization"] == quantization
    kinds_of_linear = {type(m).__name__ for m in lm.model.modules()}
    assert ("Linear8bitLt" if quantization == "int8" else "Linear4bit") in kinds_of_linear
    logits = lm.model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_cpu_nf4_names_a_layer_it_cannot_pack():
    from harness.models import ModelFetchError, load_model

    with pytest.raises(ModelFetchError, match=r"gemma3_270m: nf4 on the CPU needs .* multiple of 32; model\.layers\.0\."):
        load_model("gemma3_270m", "tiny", cache_dir=REPO, device=torch.device("cpu"), quantization="nf4")
