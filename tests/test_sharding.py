"""Work split over processes: shards partition every batch, and two processes train and evaluate like one."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.context import Processes
from harness.sharding import ShardingError, Step, shard, shard_bounds

REPO = Path(__file__).resolve().parents[1]
# accelerate's --cpu launcher needs MPI for several processes; its torchrun launcher (--multi_gpu) works on a
# machine without a GPU: each process then falls back to the CPU and gloo
ACCELERATE_2 = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness.cli"]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_contiguous_disjoint_balanced_and_cover_the_batch(count):
    for n in range(0, 23):
        items = list(range(100, 100 + n))
        parts = [shard(items, Processes(index=i, count=count)) for i in range(count)]
        assert [x for part in parts for x in part] == items  # in order, each item exactly once
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        assert [shard_bounds(n, i, count)[1] - shard_bounds(n, i, count)[0] for i in range(count)] == sizes


def test_a_batch_smaller_than_the_process_count_is_refused():
    with pytest.raises(ShardingError, match="the global batch is 1: it cannot be split over 2 processes"):
        Step([7], Processes(index=1, count=2))


@pytest.mark.slow
def test_more_processes_than_batch_items_is_one_line_before_any_work(tmp_path):
    out = subprocess.run([*ACCELERATE_2, "run", "specs/banking77_16tok.yaml", "--profile", "tiny", "--quiet",
                          "--set", "training.batch_size=1", "--results-dir", str(tmp_path / "results"),
                          "--cache-dir", str(tmp_path / "cache")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    assert "error: training.batch_size is 1: it cannot be split over 2 processes (launch at most 1 processes)" in out.stderr
    assert "harness/" not in out.stderr  # each process says one line; the only traceback is torchrun's own report
    assert not (tmp_path / "results" / "banking77_16tok").exists()


def _run(tmp_path: Path, name: str, launcher: list[str], spec: str = "banking77_16tok",
         options: tuple[str, ...] = ("--set", "training.seeds=[0]")) -> Path:
    results = tmp_path / name
    out = subprocess.run([*launcher, "run", f"specs/{spec}.yaml", "--profile", "tiny", "--quiet", "--no-analyze",
                          *options, "--results-dir", str(results),
                          "--cache-dir", str(tmp_path / f"cache-{name}")],  # separate caches: nothing trained is reused
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return results / spec


def _curves(run: Path) -> list[dict]:
    with open(run / "curves.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
    """Under `accelerate launch --num_processes 2` (gloo, CPU) each process trains on half of every global batch
    and evaluates half of the items; the loss curves equal the one-process run's within float tolerance and the
    records (every method's generation and label, in item order) are identical."""
    one = _run(tmp_path, "one", [sys.executable, "-m", "harness.cli"])
    two = _run(tmp_path, "two", ACCELERATE_2)
    assert json.loads((two / "run.json").read_text())["hardware"]["processes"] == 2
    curves_one, curves_two = _curves(one), _curves(two)
    assert len(curves_one) == len(curves_two) > 0
    for a, b in zip(curves_one, curves_two):
        assert (a["run"], a["step"]) == (b["run"], b["step"])
        for key in ("total_loss", "lm_loss", "diversity_loss", "grad_norm"):
            if a.get(key):
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), (a["run"], a["step"], key)
    rows_one, rows_two = (_rows(run) for run in (one, two))
    assert len(rows_one) == len(rows_two) == 12
    for a, b in zip(rows_one, rows_two):
        _same(a, b)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]


def _same(a, b, where: str = "") -> None:
    """Equal texts, labels and ids; floats (soft-token statistics, log-probabilities) within float tolerance."""
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, where


@pytest.mark.slow
def test_two_processes_train_and_evaluate_adapters_like_one(tmp_path):
    """The alignment kind under two processes: baselines, injections and the adapters' generations split over
    the processes, every training and validation batch sharded with averaged gradients; the epoch and batch
    logs equal the one-process run's within float tolerance and the generations are identical."""
    one = _run(tmp_path, "one", [sys.executable, "-m", "harness.cli"], "alignment_adapters_local", ())
    two = _run(tmp_path, "two", ACCELERATE_2, "alignment_adapters_local", ())
    assert json.loads((two / "run.json").read_text())["hardware"]["processes"] == 2
    curves_one, curves_two = _curves(one), _curves(two)
    assert len(curves_one) == len(curves_two) > 0
    assert {r["event"] for r in curves_one} == {"batch", "epoch"}
    for a, b in zip(curves_one, curves_two):
        assert a.keys() == b.keys()
        for key, value in a.items():
            try:
                expected = float(value)
            except ValueError:
                assert b[key] == value, (a["adapter"], a["epoch"], key)  # texts, names, directions
                continue
            if key != "seconds":
                assert float(b[key]) == pytest.approx(expected, rel=1e-4, abs=1e-5), (a["adapter"], a["epoch"], key)
    rows_one, rows_two = (_rows(run) for run in (one, two))
    assert len(rows_one) == len(rows_two) > 0
    for a, b in zip(rows_one, rows_two):
        _same(a, b)


RESUME_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from torch import nn
from harness.context import Processes
from harness.kinds.bridge.training import train
from registry.kinds.bridge import TrainingSpec

out, interrupt = Path(sys.argv[1]), sys.argv[2] == "interrupt"
processes = Processes.current("cpu")
data = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
spec = TrainingSpec(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=2, quick_eval_every=100)


def attempt(crash_at=None):
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    calls = []

    def loss(step):
        calls.append(1)
        if len(calls) == crash_at:
            raise KeyboardInterrupt  # the run is cut off before this step
        value = step.item_mean(module(data[step.local]).pow(2).mean())
        return {"total": value, "lm": value}

    result = train(module, loss, n_items=16, steps=6, spec=spec, lr=0.1, seed=0, checkpoint=out / "m.pt",
                   label="m", processes=processes)
    return result, module


if interrupt:
    try:
        attempt(crash_at=5)  # steps 1-4 run and the checkpoint of step 4 is written
    except KeyboardInterrupt:
        pass
    processes.wait()
result, module = attempt()
if processes.is_main:
    (out / "result.json").write_text(json.dumps({"log": result.log, "resumed_from": result.resumed_from,
                                                 "weight": module.weight.tolist()}))
"""


@pytest.mark.slow
def test_training_cut_off_under_two_processes_resumes_like_an_uninterrupted_run(tmp_path):
    """A run cut off after step 4 of 6 under two processes resumes from the checkpoint the main process wrote
    and ends with the log and weights of an uninterrupted one-process run."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plain = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), "whole"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    launched = subprocess.run([*ACCELERATE_2[:-2], str(script), str(tmp_path / "two"), "interrupt"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    whole = json.loads((tmp_path / "one" / "result.json").read_text())
    resumed = json.loads((tmp_path / "two" / "result.json").read_text())
    assert whole["resumed_from"] == 0 and resumed["resumed_from"] == 4
    assert [r["step"] for r in resumed["log"]] == [r["step"] for r in whole["log"]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole["log"], resumed["log"]):
        for key in ("total_loss", "lm_loss", "grad_norm", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    assert resumed["weight"][0] == pytest.approx(whole["weight"][0], rel=1e-5, abs=1e-7)


# one paper spec of every kind: the multi-GPU path on tiny stand-ins before anyone spends GPU hours
PAPER_SPECS = {"bridge": "boolq", "tre_sweep": "tre_sweep_gemma3_27b", "residual_gain": "residual_gain_paper",
               "halflife": "halflife_mixtral_8x7b", "alignment": "alignment_adapters_paper"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PAPER_SPECS))
def test_every_kind_runs_a_paper_spec_on_tiny_stand_ins_under_two_processes(kind, tmp_path):
    """Bridge and alignment specs shard over both processes; the other kinds run on the main process while the
    other exits."""
    from harness import kinds
    from registry import load_spec

    name = PAPER_SPECS[kind]
    assert load_spec(REPO / "specs" / f"{name}.yaml", "paper").kind == kind
    out = subprocess.run([*ACCELERATE_2, "run", f"specs/{name}.yaml", "--profile", "tiny", "--quiet",
                          "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((tmp_path / "results" / name / "run.json").read_text())
    sharded = kinds.kind(kind).distributed
    assert run["hardware"]["processes"] == (2 if sharded else 1) and run["n_records"] > 0
    assert (tmp_path / "results" / name / "metrics.json").is_file()
