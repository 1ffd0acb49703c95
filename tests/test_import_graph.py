"""The package layout holds: no import loop, the core never imports a kind, kinds never import each
other, and `registry/` (what to run) never imports `harness/` (how) or torch."""

import subprocess
import sys

import pytest

from conftest import REPO
from harness.kinds import STEPS, analyzer, executor, figure_maker, summarizer
from harness.codegraph import direct_imports, module_files
from registry.kinds import KINDS


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _kind_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["harness", "kinds"] and len(parts) > 2:
        return parts[2]
    return None


def test_there_is_no_import_loop():
    """Edges to a module's own parent packages are left out: Python imports those first anyway."""
    graph = {m: {d for d in direct_imports(m) if not m.startswith(d + ".")} for m in module_files()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            assert dep not in path, "import loop: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])


def test_core_never_imports_a_kind_and_kinds_never_import_each_other():
    for module in module_files():
        own = _kind_of(module)
        for dep in direct_imports(module):
            other = _kind_of(dep)
            if other is not None:
                assert other == own, f"{module} imports {dep}"


def test_registry_never_imports_harness_or_torch():
    for module in module_files():
        if module.startswith("registry"):
            assert not any(dep.startswith("harness") for dep in direct_imports(module)), module
    code = "import registry, registry.kinds, registry.catalog, sys; print('torch' in sys.modules, 'harness' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_commands_that_run_no_model_import_no_torch():
    """validate and list answer in about a second, and the report renders without torch: importing it takes
    seconds on its own. A kind's analysis, figures, summary and view read records, never models."""
    code = """if True:
        import importlib, sys
        from click.testing import CliRunner
        from harness.cli import main
        for args in (["validate", "specs/residual_gain_local.yaml"], ["list"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
        assert "torch" not in sys.modules, "validate or list imported torch"
        import harness.report.render, harness.view.site
        from harness.kinds import KINDS
        for kind in KINDS:
            for step in ("analysis", "figures", "summary", "view", "claims"):
                if importlib.util.find_spec(f"harness.kinds.{kind}.{step}"):
                    importlib.import_module(f"harness.kinds.{kind}.{step}")
                    assert "torch" not in sys.modules, f"harness.kinds.{kind}.{step} imported torch"
    """
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_fulfils_the_contract(kind):
    assert isinstance(executor(kind), STEPS["executor"])
    assert isinstance(analyzer(kind), STEPS["analysis"])
    assert isinstance(figure_maker(kind), STEPS["figures"])
    summary = summarizer(kind)
    assert summary is None or isinstance(summary, STEPS["summary"])
    assert (REPO / "registry" / "kinds" / f"{kind}.py").is_file()  # the spec model shares the kind's name


def test_no_shared_file_names_a_kind():
    """Kinds are found by listing registry/kinds/, so adding one changes no shared file (and no stage of another
    kind: the guard in tests/test_pipeline.py would otherwise see every run stage change)."""
    shared = [REPO / "registry" / "kinds" / "__init__.py", REPO / "harness" / "kinds" / "__init__.py",
              REPO / "registry" / "loader.py", REPO / "harness" / "engine.py", REPO / "harness" / "analyze.py"]
    for path in shared:
        text = path.read_text()
        for kind in KINDS:
            assert f'"{kind}"' not in text and f"'{kind}'" not in text and f".{kind}" not in text, (path, kind)
