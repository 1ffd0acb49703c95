import os
import shutil
import subprocess
import sys
from pathlib import Path

# Tests never touch the model or dataset hub. huggingface_hub reads these at import time,
# so they are set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Tests that use these fixtures run whole specs end to end (tiny models): `pytest -m "not slow"` skips them.
END_TO_END_FIXTURES = {"tiny_paper_run", "tiny_sst2", "tre_run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
SPECS = sorted((REPO / "specs").glob("*.yaml"))


def copy_code(to: Path) -> Path:
    """The project's packages (harness/, registry/) copied into `to`, without bytecode: a project to change freely."""
    for package in ("harness", "registry"):
        shutil.copytree(REPO / package, to / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return to


def one_line_error(result, code: int) -> str:
    """The one line a CLI failure promises: the exit code, no traceback, a single `error: ...` line on stderr."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def pending_stages() -> dict[str, str]:
    """Run stages declared not rerun at this commit (stages_not_run.yaml): name -> reason. Their committed results
    predate the current code, so tests of committed evidence pass them by."""
    import yaml

    declared = yaml.safe_load((REPO / "stages_not_run.yaml").read_text()) or {}
    assert all(name.startswith("run-") and isinstance(why, str) and why for name, why in declared.items()), declared
    return declared


@pytest.fixture
def write_spec(tmp_path):
    """Write a YAML spec file into a temp folder and return its path."""

    def _write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


MINIMAL_RESIDUAL = """\
kind: residual_gain
description: test spec
source: {seed: 001_2238a690a37813ca.txt}
models: [llama31_8b]
prompts:
  - {id: a, text: "The capital of France is"}
"""


@pytest.fixture(scope="session")
def tiny_paper_run(tmp_path_factory):
    """The paper residual-gain spec (eight architectures) run once in the tiny profile."""
    from harness.engine import RunSettings
    from harness.workflow import run_and_analyze as run_spec

    results = tmp_path_factory.mktemp("results")
    settings = RunSettings(profile="tiny", results_dir=results, cache_dir=tmp_path_factory.mktemp("cache"),
                           device="cpu", show_progress=False)
    summary = run_spec(REPO / "specs" / "residual_gain_paper.yaml", settings)
    return summary


# ---------------------------------------------------------------------------- a real DVC project, tiny profile
def _shell(work: Path, cache: Path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HARNESS_CACHE_DIR": str(cache), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*cmd):
        result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1000)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    sh.env = env
    return sh


@pytest.fixture(scope="session")
def _tiny_project_reproduced(tmp_path_factory):
    """A git + DVC copy of the project with two specs of different kinds, tiny profile, after its first
    `dvc repro`, committed. Built once per session; each test works on its own copy of it (`tiny_project`)."""
    base = tmp_path_factory.mktemp("tiny-project")
    work = base / "repo"
    work.mkdir()
    for item in ("specs", ".dvcignore", "benchmarks/results", "harness", "registry"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, work / item)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["specs"] = {name: params["specs"][name] for name in ("residual_gain_local", "sst2_8tok")}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    sh = _shell(work, base / "cache")
    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", work / ".dvc" / "config")
    sh("harness", "pipeline", "--write")
    first_repro = sh(sys.executable, "-m", "dvc", "repro")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    return base, first_repro


@pytest.fixture
def tiny_project(_tiny_project_reproduced, tmp_path):
    """A copy of the reproduced tiny project (git history, DVC cache and lock included): (folder, shell)."""
    base, _ = _tiny_project_reproduced
    shutil.copytree(base, tmp_path, dirs_exist_ok=True, symlinks=True)
    return tmp_path / "repo", _shell(tmp_path / "repo", tmp_path / "cache")
