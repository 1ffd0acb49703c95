"""Resource planning: known model sizes, per-kind workloads, `harness plan`, and the refusal before a run."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from harness.kinds.contract import Forward, Workload
from harness.plan import GIB, check_fits, describe, model_size, plan_spec, PlanError
from registry import load_spec

GB = 1e9


@pytest.mark.parametrize("name, quantization, params_b, weights_gb", [
    ("mixtral_8x7b", None, 46.7, 93.4),  # "~47 B parameters, ~94 GB in bf16"
    ("mixtral_8x7b", "int8", 46.7, 47.2),  # "~47 GB in int8" (embedding and LM head stay bf16)
    ("llama31_8b", None, 8.03, 16.1),  # "Llama-3.1-8B bf16 ~16 GB"
    ("mistral7b_v03_instruct", None, 7.25, 14.5),
])
def test_known_model_sizes(name, quantization, params_b, weights_gb):
    size = model_size(name, "paper", quantization=quantization)
    assert size.parameters / GB == pytest.approx(params_b, rel=0.01)
    assert size.weight_bytes / GB == pytest.approx(weights_gb, rel=0.02)


def test_nf4_is_about_a_quarter_of_bf16_and_keeps_the_embeddings_wide():
    bf16 = model_size("mixtral_8x22b_instruct", "paper", quantization="none").weight_bytes
    nf4 = model_size("mixtral_8x22b_instruct", "paper").weight_bytes  # the catalog's NF4
    assert 0.25 < nf4 / bf16 < 0.28


def test_tiny_models_are_measured_from_their_config():
    from harness.models import load_model

    lm = load_model("llama31_8b", "tiny", cache_dir=REPO, device=torch.device("cpu"))
    assert model_size("llama31_8b", "tiny").parameters == sum(p.numel() for p in lm.model.parameters())


def test_the_report_hardware_holds_the_tre_models():
    """Seed 000 ran DeepSeek-70B and Gemma-2-27B (NF4) on an A100 80GB and Mixtral-8x22B (NF4) on an H200 141GB."""
    fits = {name: plan_spec(load_spec(REPO / "specs" / f"{name}.yaml", "paper"), "paper").fits()
            for name in ("tre_sweep_deepseek_r1_llama70b", "tre_sweep_gemma2_27b", "tre_sweep_mixtral_8x22b")}
    assert 80 in fits["tre_sweep_deepseek_r1_llama70b"] and 80 in fits["tre_sweep_gemma2_27b"]
    assert fits["tre_sweep_mixtral_8x22b"] == [141]


def test_a_bridge_plan_counts_both_models_the_bridge_and_a_backward():
    plan = plan_spec(load_spec(REPO / "specs" / "banking77_16tok.yaml", "paper"), "paper")
    assert set(plan.sizes) == {"llama31_8b_instruct", "mistral7b_v03_instruct"}
    assert any(f.forward.trains and f.forward.model == "mistral7b_v03_instruct" for f in plan.forwards)
    weights = sum(s.weight_bytes for s in plan.sizes.values())
    assert plan.total_bytes > weights + plan.optimizer_bytes
    assert 1e6 < plan.workload.trainable_parameters < 2e8
    text = "\n".join(describe(plan))
    assert "8.03 B parameters" in text and "with backward" in text and "fits a GPU of" in text


def test_models_loaded_in_turn_peak_at_the_largest():
    plan = plan_spec(load_spec(REPO / "specs" / "residual_gain_paper.yaml", "paper"), "paper")
    largest = max(s.weight_bytes for s in plan.sizes.values())
    assert largest < plan.total_bytes < largest * 1.1


def test_a_run_larger_than_the_machine_is_refused_before_loading(monkeypatch):
    import harness.plan as P

    plan = plan_spec(load_spec(REPO / "specs" / "banking77_16tok.yaml", "paper"), "paper")
    monkeypatch.setattr(P, "available_memory", lambda device: 8 * GIB)
    with pytest.raises(PlanError, match=r"banking77_16tok needs about 3\d\.\d GiB .* the machine has 8.0 GiB"):
        check_fits(plan, torch.device("cpu"))


def test_cli_plan_prints_every_paper_spec():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--profile", "paper"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tre_sweep_mixtral_8x22b (paper profile)" in out.stdout and "residual_gain_paper" in out.stdout


def test_cli_plan_over_a_folder_names_each_spec_the_profile_cannot_run_and_goes_on():
    run = lambda *args: subprocess.run([sys.executable, "-m", "harness.cli", "plan", *args], cwd=REPO,
                                       capture_output=True, text=True)
    out = run("specs", "--profile", "paper")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "halflife_toy (paper profile): not planned: " in out.stdout and "mixtral_toy" in out.stdout
    assert "tre_sweep_mixtral_8x22b (paper profile)" in out.stdout and "residual_gain_paper" in out.stdout
    one = run("specs/halflife_toy.yaml", "--profile", "paper")  # one spec named: refused, in one line
    assert one.returncode != 0 and "specs/halflife_toy.yaml" in one.stderr and "mixtral_toy" in one.stderr


def test_workload_peak_uses_the_largest_forward():
    from harness.plan import ForwardPlan, ModelSize, Plan

    size = ModelSize("m", 10, 1, 4, 8, 1, 4, 2, 100.0, "bfloat16")
    forwards = [ForwardPlan(Forward("a", "m", 1, 1), 5.0, 5.0), ForwardPlan(Forward("b", "m", 1, 1), 30.0, 0.0)]
    plan = Plan("s", "paper", Workload(["m"], [f.forward for f in forwards], 0, trainable_parameters=1), {"m": size},
                forwards, 16.0)
    assert plan.total_bytes == 100 + 30 + 16
