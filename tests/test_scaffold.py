"""`harness new-kind`: the kind it writes validates, runs on the tiny profile and passes its own test, in a copy of
the project; a bad or taken name is one line and writes nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_code
from harness.scaffold import TEMPLATES, new_kind
from registry.errors import SpecError


def _copy_project(to: Path) -> Path:
    copy_code(to)
    shutil.copy(REPO / "pyproject.toml", to / "pyproject.toml")
    (to / "specs").mkdir()
    (to / "tests").mkdir()
    return to


def _harness(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project), "HARNESS_CACHE_DIR": str(project / ".cache")}
    return subprocess.run([sys.executable, "-m", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_new_kind_validates_runs_on_tiny_and_passes_its_own_test(tmp_path):
    project = _copy_project(tmp_path / "project")
    made = _harness(project, "harness.cli", "new-kind", "demo")
    assert made.returncode == 0, made.stderr
    assert {line.removeprefix("wrote ") for line in made.stdout.splitlines() if line.startswith("wrote ")} == {
        where.format(name="demo") for where in TEMPLATES.values()}
    check = _harness(project, "harness.cli", "validate", "specs/demo_example.yaml")
    assert check.returncode == 0 and "(demo; runs on: tiny, local, paper)" in check.stdout, check.stdout + check.stderr
    run = _harness(project, "harness.cli", "run", "specs/demo_example.yaml", "--profile", "tiny", "--quiet",
                   "--device", "cpu", "--run-id", "first")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((project / "runs" / "first" / "results" / "demo_example" / "metrics.json").read_text())
    assert set(metrics) >= {"smollm2_135m_instruct.entropy_nats.mean"}
    own_test = _harness(project, "pytest", "-q", "-p", "no:cacheprovider", "tests/test_demo.py")
    assert own_test.returncode == 0 and "2 passed" in own_test.stdout, own_test.stdout + own_test.stderr


@pytest.mark.parametrize("name, message", [("Demo", "is not a kind name"), ("class", "is not a kind name"),
                                           ("bridge", "already exists")])
def test_a_bad_or_taken_name_is_refused_and_nothing_is_written(tmp_path, name, message):
    project = _copy_project(tmp_path / "project")
    before = sorted(p for p in project.rglob("*"))
    with pytest.raises(SpecError, match=message):
        new_kind(name, project)
    assert sorted(p for p in project.rglob("*")) == before


def test_a_file_in_the_way_is_named_and_nothing_is_written(tmp_path):
    project = _copy_project(tmp_path / "project")
    (project / "specs" / "demo_example.yaml").write_text("mine\n", encoding="utf-8")
    with pytest.raises(SpecError, match="would overwrite .*demo_example.yaml"):
        new_kind("demo", project)
    assert (project / "specs" / "demo_example.yaml").read_text(encoding="utf-8") == "mine\n"
    assert not (project / "harness" / "kinds" / "demo").exists()
    assert not (project / "registry" / "kinds" / "demo.py").exists()
