"""The project's import graph, read from source (`import` statements, also those inside functions,
not those under `if TYPE_CHECKING:`), and a digest of the code a module runs.

Two users: harness/pipeline.py turns closures into each DVC stage's dependencies, and the caches
(training state, sender states, dequantised weights) put `code_digest` into their keys, so a code
change never silently reuses an artefact the old code produced.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

from harness import kinds
from registry.kinds import INSTALLED, KINDS, harness_package, spec_module

PACKAGES = ("harness", "registry")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _installed_kind_folders() -> dict[str, Path]:
    """Each installed kind's package -> its folder (found without importing the package itself)."""
    folders = {}
    for package in sorted(set(INSTALLED.values())):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"the installed kind package {package!r} is not an importable package (a folder "
                              f"with __init__.py); reinstall the distribution that registers it")
        folders[package] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return folders


@cache
def module_files(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Module name -> source file, for every module of the project's packages and of installed kinds' packages:
    relative to `root` when inside it, else absolute (a kind installed from elsewhere)."""
    found = {}
    folders = {package: root / package for package in PACKAGES}
    folders.update(_installed_kind_folders())
    for package, folder in folders.items():
        base = folder.parent
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = (*package.split(".")[:-1], *(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
            found[".".join(parts)] = path.relative_to(root) if path.is_relative_to(root) else path
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


@cache
def direct_imports(module: str, root: Path = PROJECT_ROOT) -> frozenset[str]:
    """Project modules that `module` imports anywhere in its source (plus their parent packages)."""
    modules = module_files(root)
    tree = ast.parse((root / modules[module]).read_text(encoding="utf-8"))
    package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
            found.update(p for p in _parents(name) if p in modules)
    return frozenset(found - {module})


def _other_kind(module: str, kind: str | None) -> bool:
    """Whether `module` belongs to a kind other than `kind` (the contract in harness/kinds/ belongs to none)."""
    for prefix in ("registry.kinds.", "harness.kinds."):
        if module.startswith(prefix):
            owner = module[len(prefix):].split(".")[0]
            return owner in KINDS and owner != kind
    return any(module == package or module.startswith(package + ".")
               for other, package in INSTALLED.items() if other != kind)


def closure(roots: list[str], kind: str | None = None, root: Path = PROJECT_ROOT) -> set[str]:
    """Modules reachable from `roots`; with `kind`, never entering another kind's modules (see above)."""
    seen: set[str] = set()
    todo = [m for r in roots for m in (*_parents(r), r) if m in module_files(root)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in direct_imports(module, root) if kind is None or not _other_kind(m, kind))
    return seen


def run_roots(kind: str, parts: tuple[str, ...] = ()) -> list[str]:
    """What a run of `kind` executes, with the `parts` its spec declares (`code_parts()`). A kind's modules are
    loaded by name, so they are roots of their own."""
    package = harness_package(kind)
    return ["harness.engine", spec_module(kind), f"{package}.{kinds.kind(kind).executor}",
            *(f"{package}.{part}" for part in parts)]


def analyze_roots(kind: str) -> list[str]:
    declared, package = kinds.kind(kind), harness_package(kind)
    return ["harness.analyze", spec_module(kind), f"{package}.{declared.analysis}", f"{package}.{declared.figures}"]


@cache
def code_digest(roots: tuple[str, ...], kind: str | None = None, root: Path = PROJECT_ROOT) -> str:
    """sha256 over the path and bytes of every source file in the closure of `roots`."""
    files = module_files(root)
    digest = hashlib.sha256()
    for module in sorted(closure(list(roots), kind, root)):
        digest.update(str(files[module].as_posix()).encode() + b"\0")
        digest.update((root / files[module]).read_bytes() + b"\0")
    return digest.hexdigest()
