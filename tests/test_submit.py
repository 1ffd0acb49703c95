"""`harness submit`: one submitit job per spec that writes the run directory a local run writes; specs
that cannot fit the requested GPU are refused before anything is queued."""

import builtins
import json
import subprocess
import sys

import pytest

from conftest import REPO


def _submit(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", "submit", *args], cwd=REPO, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_a_local_job_writes_the_same_run_directory(tmp_path):
    out = _submit("specs/residual_gain_local.yaml", "--executor", "local", "--profile", "tiny", "--gpus", "0", "--wait",
                  "--results-dir", str(tmp_path / "results"), "--logs", str(tmp_path / "logs"))
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = tmp_path / "results" / "residual_gain_local"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["profile"] == "tiny" and (run_dir / "metrics.json").is_file() and (run_dir / "records.jsonl").is_file()
    assert any((tmp_path / "logs").glob("*_log.out"))  # submitit kept the job's output


def test_a_spec_larger_than_the_gpu_is_refused_before_queueing(tmp_path):
    out = _submit("specs/residual_gain_local.yaml", "specs/banking77_16tok.yaml", "--executor", "local",
                  "--gpu-memory", "24", "--logs", str(tmp_path / "logs"))
    assert out.returncode == 1
    assert "specs/banking77_16tok.yaml: needs about 3" in out.stderr and "24 GiB GPU" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "logs").exists()  # nothing queued


def test_missing_submitit_and_unknown_executors_are_one_line(monkeypatch, tmp_path):
    from harness import submit as S

    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(S.SubmitError, match="submitit is not installed: pip install submitit"):
        S._executor("slurm", tmp_path)
    with pytest.raises(S.SubmitError, match="submitit is not installed"):  # before anything imports it
        S.submit([REPO / "specs" / "residual_gain_local.yaml"], "slurm", S.Resources(profile="tiny", gpus=0),
                 tmp_path / "results", tmp_path / "logs")
    monkeypatch.setattr(builtins, "__import__", real_import)
    with pytest.raises(S.SubmitError, match="unknown executor 'pbs'"):
        S._executor("pbs", tmp_path)


def test_job_memory_is_the_plan_peak_plus_headroom():
    from harness.plan import plan_spec
    from harness.submit import job_memory_gb
    from registry import load_spec

    plan = plan_spec(load_spec(REPO / "specs" / "halflife_mixtral_8x7b.yaml", "paper"), "paper")
    assert job_memory_gb(plan.total_bytes) == int(-(-plan.total_bytes // 1e9)) + 16


@pytest.mark.slow
def test_two_processes_run_a_kind_without_sharding_on_the_main_process(tmp_path):
    """Under torchrun / accelerate launch with 2 processes, a kind that does not shard its work runs once, on
    the main process; the other process exits cleanly and nothing is written twice."""
    out = subprocess.run(["torchrun", "--nproc_per_node", "2", "--standalone", "-m", "harness.cli", "run",
                          "specs/residual_gain_local.yaml", "--profile", "tiny", "--quiet", "--no-analyze",
                          "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((tmp_path / "results" / "residual_gain_local" / "run.json").read_text())
    assert run["hardware"]["processes"] == 1 and run["n_records"] > 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if not p.name.startswith(".")) == ["residual_gain_local"]
