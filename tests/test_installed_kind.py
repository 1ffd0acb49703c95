"""A kind from an installed distribution (tests/fixtures/entropy_probe_kind, registered through the entry-point
group latent_harness.kinds) is a kind like the built-in ones: listed, validated, run on the tiny profile, rendered,
and its DVC stages depend on its own source files where it is installed."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, copy_code

FIXTURE = REPO / "tests" / "fixtures" / "entropy_probe_kind"
SPEC = """\
kind: entropy_probe
description: Next-token entropy after two prompts, from a kind installed from outside the project.
source: {reference: "tests/fixtures/entropy_probe_kind"}
models: [smollm2_135m_instruct]
prompts: ["The capital of France is", "1, 2, 3,"]
"""


def _scratch_venv(where: Path) -> Path:
    """A virtualenv that sees this environment's packages (torch, pydantic, ...) but installs into its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    outer = sysconfig.get_paths()["purelib"]
    Path(purelib, "_outer_environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n", encoding="utf-8")
    return python


@pytest.mark.slow
def test_an_installed_kind_lists_validates_runs_renders_and_its_code_is_a_stage_dependency(tmp_path):
    python = _scratch_venv(tmp_path / "venv")
    source = shutil.copytree(FIXTURE, tmp_path / "entropy_probe_kind")  # a build writes beside the sources
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", str(source)], check=True, capture_output=True)
    installed = Path(subprocess.run([python, "-c", "import entropy_probe; print(entropy_probe.__file__)"],
                                    check=True, capture_output=True, text=True).stdout.strip()).parent
    assert installed.is_relative_to(tmp_path / "venv")

    project = copy_code(tmp_path / "project")
    (project / "specs").mkdir()
    (project / "specs" / "probe.yaml").write_text(SPEC, encoding="utf-8")
    (project / "params.yaml").write_text("profile: tiny\nspecs:\n  probe: specs/probe.yaml\n", encoding="utf-8")
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)

    def harness(*args: str) -> str:
        result = subprocess.run([python, "-m", "harness.cli", *args], cwd=project, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert harness("list").splitlines()[1].split()[:2] == ["probe", "entropy_probe"]
    assert "(entropy_probe; runs on: tiny, local, paper)" in harness("validate", "specs/probe.yaml")
    harness("run", "specs/probe.yaml", "--profile", "tiny", "--quiet", "--device", "cpu", "--run-id", "t")
    metrics = json.loads((project / "runs" / "t" / "results" / "probe" / "metrics.json").read_text())
    assert "smollm2_135m_instruct.entropy_nats.mean" in metrics
    harness("report", "--run", "runs/t")
    assert "Mean next-token entropy" in (project / "runs" / "t" / "reports" / "probe.md").read_text()

    import yaml

    stages = yaml.safe_load(harness("pipeline", "--params", "params.yaml"))["stages"]
    run_deps, analyze_deps = set(stages["run-probe"]["deps"]), set(stages["analyze-probe"]["deps"])
    own = {name: str(installed / f"{name}.py") for name in ("__init__", "spec", "measure", "executor", "analysis",
                                                             "figures")}
    assert {own["__init__"], own["spec"], own["measure"], own["executor"]} <= run_deps
    assert not {own["analysis"], own["figures"]} & run_deps
    assert {own["spec"], own["analysis"], own["figures"]} <= analyze_deps
    assert not {own["executor"], own["measure"]} & analyze_deps
    assert "harness/engine.py" in run_deps and "harness/kinds/bridge/executor.py" not in run_deps


def test_an_entry_point_cannot_replace_a_built_in_kind_and_a_malformed_one_is_named(monkeypatch):
    from importlib import metadata

    import registry.kinds as registry_kinds

    points = [metadata.EntryPoint("bridge", "someone_elses_bridge", "latent_harness.kinds"),
              metadata.EntryPoint("Probe-2", "probe", "latent_harness.kinds"),
              metadata.EntryPoint("probe", "probe_pkg:thing", "latent_harness.kinds"),
              metadata.EntryPoint("fine", "fine_pkg.kind", "latent_harness.kinds")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: [p for p in points if p.group == group])
    with pytest.warns(UserWarning) as caught:
        found = registry_kinds._installed()
    assert found == {"fine": "fine_pkg.kind"}
    messages = [str(w.message) for w in caught]
    assert any("'bridge' is a built-in kind" in m for m in messages)
    assert sum("the name must be a kind name" in m for m in messages) == 2
    assert registry_kinds.harness_package("bridge") == "harness.kinds.bridge"
    assert registry_kinds.spec_module("bridge") == "registry.kinds.bridge"
