import os
from pathlib import Path

# Tests never touch the model or dataset hub. huggingface_hub reads these at import time,
# so they are set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Tests that use these fixtures run whole specs end to end (tiny models): `pytest -m "not slow"` skips them.
END_TO_END_FIXTURES = {"tiny_paper_run", "tiny_sst2", "tre_run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
SPECS = sorted((REPO / "specs").glob("*.yaml"))


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
