"""`harness new-kind NAME`: write a minimal experiment kind that validates and runs on the tiny profile at once.

The files come from the templates beside this module, rendered with the kind's name. Nothing is written unless
every target is free, and a failure part-way removes what this call wrote (never a file that was there).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import jinja2

from registry.errors import SpecError

TEMPLATES = {  # template -> where it goes, relative to the project root
    "spec_model.py.j2": "registry/kinds/{name}.py",
    "__init__.py.j2": "harness/kinds/{name}/__init__.py",
    "executor.py.j2": "harness/kinds/{name}/executor.py",
    "analysis.py.j2": "harness/kinds/{name}/analysis.py",
    "figures.py.j2": "harness/kinds/{name}/figures.py",
    "README.md.j2": "harness/kinds/{name}/README.md",
    "spec.yaml.j2": "specs/{name}_example.yaml",
    "test_kind.py.j2": "tests/test_{name}.py",
}


def new_kind(name: str, root: Path = Path(".")) -> list[Path]:
    """Write the kind `name` under `root`; returns the files written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise SpecError(f"{name!r} is not a kind name: use lower-case letters, digits and underscores, starting "
                        f"with a letter (it becomes a Python module and the specs' `kind:`)")
    root = Path(root)
    targets = {template: root / where.format(name=name) for template, where in TEMPLATES.items()}
    for folder in (root / "registry" / "kinds", root / "harness" / "kinds"):
        if not folder.is_dir():
            raise SpecError(f"{folder} not found: run `harness new-kind` in the project's root folder")
    if (root / "harness" / "kinds" / name).exists() or (root / "registry" / "kinds" / f"{name}.py").exists():
        raise SpecError(f"a kind named {name!r} already exists")
    taken = [str(path) for path in targets.values() if path.exists()]
    if taken:
        raise SpecError(f"would overwrite {', '.join(taken)}; move it or pick another name")
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.scaffold", "templates"), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    values = {"name": name, "camel": "".join(part.capitalize() for part in name.split("_")),
              "title": name.replace("_", " ").capitalize()}
    written: list[Path] = []
    try:
        for template, path in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as handle:  # "x": never replaces a file made meanwhile
                written.append(path)
                handle.write(env.get_template(template).render(**values))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if (root / "harness" / "kinds" / name).is_dir() and not any((root / "harness" / "kinds" / name).iterdir()):
            (root / "harness" / "kinds" / name).rmdir()
        raise
    return written
