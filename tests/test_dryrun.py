"""Dry runs (harness/dryrun.py): the catalog's architecture configurations against the parameter counts the plan
uses, and paper specs run through their own executors on stand-in models."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, one_line_error
from harness import dryrun
from registry.loader import spec_files
from registry import load_spec
from registry.catalog import HFSource, model_catalog

HUB_MODELS = sorted(name for name, entry in model_catalog().items()
                    if isinstance(entry.sources.get("paper"), HFSource))


@pytest.mark.parametrize("name", HUB_MODELS)
def test_every_hub_model_has_an_architecture_with_the_catalogs_parameter_count(name):
    arch = dryrun.architecture(name)
    built = dryrun.parameter_count(name, "real")
    expected = model_catalog()[name].shape.parameters
    assert abs(built / expected - 1) <= arch.parameter_gap, (name, built, expected)
    source = model_catalog()[name].sources["paper"]
    assert (arch.config["num_hidden_layers"], arch.config["hidden_size"]) == source.dims()
    assert arch.config["vocab_size"] == model_catalog()[name].shape.vocab_size


def test_a_stand_in_keeps_layers_vocabulary_and_experts_and_shrinks_the_width():
    tokenizer = dryrun.tiny_tokenizer()
    real = dryrun.build_config("mixtral_8x7b", "real", tokenizer)
    small = dryrun.build_config("mixtral_8x7b", "stand-in", tokenizer)
    assert (small.num_hidden_layers, small.vocab_size, small.num_local_experts) == (32, 32000, 8)
    assert small.hidden_size == 64 and real.hidden_size == 4096
    assert small.num_attention_heads // small.num_key_value_heads == real.num_attention_heads // real.num_key_value_heads
    assert dryrun.parameter_count("mixtral_8x7b", "stand-in") < 1e8


def test_synthetic_items_are_padded_to_the_length_the_plan_assumes():
    from registry.catalog import dataset_entry

    items = [dryrun._padded(i) for i in dryrun.synthetic_items(dataset_entry("banking77"), "test", 5, 0)]
    assert all(len(i["text"]) >= dryrun.ITEM_TOKENS and i["label_name"] in i["text"] for i in items)


# One spec for each kind, the flow bridge, and each quantised path (NF4, int8 on a mixture of experts); every
# method of the bridge runs in sst2_8tok. benchmarks/gpu_check.sh runs more of them on a GPU.
REPRESENTATIVE = ["sst2_8tok", "gsm8k_v12_dit", "tre_sweep_gemma2_27b", "residual_gain_paper",
                  "alignment_adapters_paper", "halflife_mixtral_8x7b"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_paper_specs_run_their_executor_on_stand_in_models(name, tmp_path):
    result = dryrun.dry_run(REPO / "specs" / f"{name}.yaml", size="stand-in", device=torch.device("cpu"),
                            steps=1, items=1, tokens=2)
    spec = load_spec(REPO / "specs" / f"{name}.yaml", "paper")
    assert result["records"] > 0 and result["measured"]["peak_bytes"] > 0
    assert set(result["models"]) == set(spec.model_names())
    assert all(m["forwards"] > 0 and m["positions"] > 0 for m in result["models"].values()), result["models"]
    assert result["planned"]["peak_bytes"] > 0
    path = dryrun.write(result, tmp_path)
    assert json.loads(path.read_text())["spec"] == name


def test_every_paper_spec_is_covered_by_a_dry_run_or_named_as_not_runnable():
    """Every spec the paper profile can run has architectures for all its models (so `harness dry-run` can build
    them); the representative set above covers each kind."""
    from registry.catalog import check_runnable
    from registry.errors import SpecError

    kinds = set()
    for path in spec_files([REPO / "specs"]):
        spec = load_spec(path, "paper")
        try:
            check_runnable(spec, "paper", None)
        except SpecError:
            continue
        for model in spec.model_names():
            dryrun.architecture(model)
        kinds.add(spec.kind)
    assert kinds == {load_spec(REPO / "specs" / f"{n}.yaml", "paper").kind for n in REPRESENTATIVE}


SWEEP = REPO / "benchmarks" / "results" / "dry_runs" / "stand-in-cpu"


def test_every_paper_spec_has_a_committed_stand_in_dry_run():
    """CI runs the representative set above; the rest of the paper specs' stand-in dry runs are committed evidence
    (`harness dry-run specs/ --steps 1 --items 1 --tokens 2 --out benchmarks/results/dry_runs/stand-in-cpu`):
    each runnable spec has its record there, and the summary lists it."""
    from registry.catalog import check_runnable
    from registry.errors import SpecError

    summary = (SWEEP / "summary.md").read_text()
    for path in spec_files([REPO / "specs"]):
        try:
            check_runnable(load_spec(path, "paper"), "paper", None)
        except SpecError:
            continue
        record = SWEEP / f"{path.stem}.stand-in.cpu.json"
        assert record.is_file(), f"{path.stem}: no committed stand-in dry run (run `harness dry-run {path.relative_to(REPO)} " \
                                 f"--steps 1 --items 1 --tokens 2 --out {SWEEP.relative_to(REPO)}`)"
        result = json.loads(record.read_text())
        assert result["spec"] == path.stem and result["records"] > 0 and result["measured"]["peak_bytes"] > 0
        assert f"| {path.stem} | stand-in |" in summary


def test_dry_run_of_a_spec_the_paper_profile_cannot_run_is_one_line():
    result = subprocess.run([sys.executable, "-m", "harness.cli", "dry-run", "specs/halflife_toy.yaml",
                             "--device", "cpu"], cwd=REPO, capture_output=True, text=True)
    assert "mixtral_toy" in one_line_error(result, 2)


def test_over_several_specs_each_runs_in_its_own_process_and_a_failure_is_named(monkeypatch, tmp_path):
    """Each spec's dry run is its own `harness dry-run SPEC` process (a CPU peak is only measurable in a fresh
    process); one that breaks is named in one line with its error's last line, and the rest still run."""
    from click.testing import CliRunner
    from harness import cli

    calls = []

    def child(cmd, **_):
        calls.append(cmd)
        broken = cmd[4].endswith("halflife_mixtral_8x7b.yaml")
        return subprocess.CompletedProcess(cmd, 1 if broken else 0, stderr=(
            "Traceback (most recent call last):\n  ...\nRuntimeError: size 44 vs 16 at dim 2\n" if broken else ""))

    monkeypatch.setattr(cli.subprocess, "run", child)
    result = CliRunner().invoke(cli.main, ["dry-run", "specs/residual_gain_paper.yaml", "specs/halflife_toy.yaml",
                                           "specs/halflife_mixtral_8x7b.yaml", "--device", "cpu", "--steps", "2",
                                           "--set", "seed=3", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert [c[4] for c in calls] == ["specs/residual_gain_paper.yaml", "specs/halflife_mixtral_8x7b.yaml"]
    assert calls[0][:4] == [sys.executable, "-m", "harness.cli", "dry-run"]
    assert {"--steps", "2", "--set", "seed=3", "--device", "cpu"} <= set(calls[0])
    assert "specs/halflife_toy.yaml: no dry run" in result.output  # no paper models: named, not run
    assert "specs/halflife_mixtral_8x7b.yaml: dry run FAILED: RuntimeError: size 44 vs 16 at dim 2" in result.output
    assert "1 dry run(s) failed: halflife_mixtral_8x7b" in result.output


def test_a_model_without_an_architecture_is_named(monkeypatch):
    monkeypatch.setattr(dryrun, "architectures", lambda: {})
    with pytest.raises(dryrun.SpecError, match="'llama2_7b' has no architecture in registry/catalog/architectures.yaml"):
        dryrun.architecture("llama2_7b")


@pytest.mark.slow
def test_the_plan_agrees_with_a_real_size_dry_run_on_the_cpu(tmp_path):
    """Gemma-3-270M at its published size in float32 (1.1 GiB of weights): the plan's weights and peak within the
    stated tolerance of what the run holds (benchmarks/dry_run_memory.py adds bfloat16 and a 7 B model). In its own
    process, as `harness dry-run` runs: memory that earlier tests freed is reused without raising the resident set,
    so measured in this process the weights would read low."""
    subprocess.run([sys.executable, "-m", "harness.cli", "dry-run", "specs/tre_sweep_gemma3_270m_local.yaml",
                    "--size", "real", "--device", "cpu", "--steps", "1", "--items", "1", "--tokens", "4",
                    "--set", "dtype=float32", "--out", str(tmp_path)], cwd=REPO, check=True, capture_output=True,
                   timeout=600)
    result = json.loads((tmp_path / "tre_sweep_gemma3_270m_local.real.cpu.json").read_text())
    assert result["models"]["gemma3_270m"]["parameters"] == 268_098_176
    agreement = dryrun.plan_agreement(result)
    assert agreement["within_tolerance"], agreement
