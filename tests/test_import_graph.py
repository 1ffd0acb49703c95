"""The package layout holds: no import loop, the core never imports a kind, kinds never import each
other, the kind contract is the ground floor, every kind declares what it provides, and `registry/` (what to run)
never imports `harness/` (how) or torch."""

import subprocess
import sys

import pytest

from conftest import REPO, SPECS
from harness import kinds
from harness.codegraph import direct_imports, module_files
from harness.kinds.contract import HOOKS, ROLES, Kind
from registry import load_spec
from registry.kinds import KINDS


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _kind_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["harness", "kinds"] and len(parts) > 2 and parts[2] in KINDS:
        return parts[2]
    return None  # the core, or the contract and loader on harness/kinds/'s ground floor


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
        from harness import kinds
        for kind in KINDS:
            for role, module in kinds.kind(kind).modules().items():
                if role not in ("executor", "plan"):
                    importlib.import_module(f"harness.kinds.{kind}.{module}")
                    assert "torch" not in sys.modules, f"harness.kinds.{kind}.{module} imported torch"
            if importlib.util.find_spec(f"harness.kinds.{kind}.claims"):
                importlib.import_module(f"harness.kinds.{kind}.claims")
                assert "torch" not in sys.modules, f"harness.kinds.{kind}.claims imported torch"
    """
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_contract_and_the_loader_are_the_ground_floor():
    """harness/kinds/contract.py imports nothing of the project, the loader only the contract and the registry, so
    the core can import both without a loop and no import runs from the core back up into a kind."""
    assert direct_imports("harness.kinds.contract") <= {"harness", "harness.kinds"}
    assert {d for d in direct_imports("harness.kinds") if not d.startswith("registry")} == \
        {"harness", "harness.kinds.contract"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_declares_one_kind_object_and_fulfils_it(kind):
    """Every module the KIND names loads and fulfils its Protocol; loading checks each declared hook is there and
    each hook that is there is declared; every declared part is a module of the package."""
    declared = kinds.kind(kind)
    assert isinstance(declared, Kind) and declared.name == kind
    for role, loader in (("executor", kinds.executor), ("analysis", kinds.analyzer), ("figures", kinds.figure_maker),
                         ("summary", kinds.summarizer), ("plan", kinds.planner), ("view", kinds.viewer)):
        module = loader(kind)
        assert (module is None) == (role not in declared.modules())
        assert module is None or isinstance(module, ROLES[role])
    for part in declared.parts:
        assert (REPO / "harness" / "kinds" / kind / f"{part}.py").is_file(), part
    for path in SPECS:  # a spec may only need parts its kind declares (load_part would refuse the run)
        spec = load_spec(path, "paper")
        if spec.kind == kind:
            assert set(spec.code_parts()) <= set(declared.parts), (path.name, spec.code_parts())
    assert (REPO / "registry" / "kinds" / f"{kind}.py").is_file()  # the spec model shares the kind's name


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_a_hook_is_used_only_when_declared_and_declared_only_when_there(hook, monkeypatch):
    """The core reads optional hooks from the KIND, never by looking for an attribute; a module whose hooks and
    declaration disagree refuses to load, naming the hook, rather than having it silently used or ignored."""
    import dataclasses

    role, attribute = HOOKS[hook]
    declared = {k: kinds.kind(k) for k in KINDS}
    has = next(k for k in KINDS if getattr(declared[k], hook))  # a kind that provides the hook
    lacks = next((k for k in KINDS if not getattr(declared[k], hook) and role in declared[k].modules()), None)
    for kind, value, message in ((has, False, "defines"), (lacks, True, "lacks")):
        if kind is None:
            continue
        flipped = dataclasses.replace(declared[kind], **{hook: value})
        monkeypatch.setattr(kinds, "kind", lambda name: flipped)
        with pytest.raises(TypeError, match=f"declares {hook}={value} but the module {message} {attribute}"):
            kinds._module(kind, role)


def test_no_core_module_looks_for_a_kind_hook_by_attribute():
    hooks = {attribute for _, attribute in HOOKS.values()} | {"DISTRIBUTED"}
    for module, path in module_files().items():
        if _kind_of(module) is None and module.startswith("harness") and module not in ("harness.kinds",
                                                                                         "harness.kinds.contract"):
            text = (REPO / path).read_text()
            for name in hooks:
                assert f'"{name}"' not in text, f"{path} looks up {name} by name; read it from the kind's KIND"


def test_no_shared_file_names_a_kind():
    """Kinds are found by listing registry/kinds/, so adding one changes no shared file (and no stage of another
    kind: the guard in tests/test_pipeline.py would otherwise see every run stage change)."""
    shared = [REPO / "registry" / "kinds" / "__init__.py", REPO / "harness" / "kinds" / "__init__.py",
              REPO / "registry" / "loader.py", REPO / "harness" / "engine.py", REPO / "harness" / "analyze.py"]
    for path in shared:
        text = path.read_text()
        for kind in KINDS:
            assert f'"{kind}"' not in text and f"'{kind}'" not in text and f".{kind}" not in text, (path, kind)
