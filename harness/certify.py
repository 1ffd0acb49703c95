"""`harness certify`: carry a run stage forward across a code change that should not change its results, and
prove it.

A run stage goes stale when a file it imports changes. If the change is a refactor, rerunning the stage for hours
buys nothing; recording the new code with `dvc commit` without checking trusts the refactor blindly. Certify
checks: for each stale run stage whose only changed inputs are code files, it rebuilds the code the committed
lock was made with (every dependency file at the content hash `dvc.lock` records, found in git's history) in a
scratch worktree, runs the stage's spec there and in the working tree on the tiny profile (and, for kinds with
a shortened local setting, on the local profile with real models, shortened), and compares the outputs byte for
byte. Only when every output is identical does it run `dvc commit -f` for the stage and write a certificate
(`certificates/<stage>.json`: the code that changed, where the old code was found, what ran and the outputs'
hashes). The first difference stops that stage and is named. A changed spec or catalog param, or a changed
command, is never a refactor: certify refuses those stages.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from registry.errors import SpecError
from registry.yaml_io import _SpecYamlLoader as _Yaml12Loader

# The local profile shortened so a check with real models takes minutes: (kind -> overrides). Kinds not listed are
# checked on the tiny profile only (the certificate says so).
SHORT_LOCAL = {
    "bridge": ("training.steps=4", "task.eval_items=16", "training.seeds=[0]", "evaluation.prompt_tuning.steps=2"),
    "tre_sweep": ("trials=1", "max_new_tokens=8", "use_per_category=1"),
    "halflife": ("chunks=3", "chunk_tokens=4"),
    "residual_gain": (),
}
# Fields only some specs of a kind have, shortened where the spec sets them (the trained half-life toy's
# pretraining is most of its run).
SHORT_LOCAL_WHERE_SET = {
    "halflife": {"pretrain": ("pretrain.steps=8", "pretrain.warmup_steps=2", "pretrain.seeds=[]")},
}
COMPARED = ("records.jsonl", "curves.csv")  # run.json holds wall times and provenance, which differ by design
VOLATILE_COLUMNS = ("seconds",)  # wall-clock columns of a training log
CERTIFICATES = Path("certificates")


class NotARefactor(SpecError):
    """The stage's inputs changed in a way a refactor cannot (a param, the command): it must rerun."""


class NotIdentical(SpecError):
    """The committed code and the working code wrote different outputs: the change is not a refactor."""


@dataclass
class StaleCode:
    path: str
    committed_md5: str | None  # None: a dependency the committed lock did not have
    working_md5: str | None  # None: a dependency removed since


@dataclass
class Certificate:
    stage: str
    spec: str
    kind: str
    head: str
    changed: list[StaleCode]
    found_at: dict[str, str] = field(default_factory=dict)  # path -> the revision holding the committed content
    variants: list[dict] = field(default_factory=list)
    certified_at: str = ""


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def _git(repo: Path, *args: str, binary: bool = False):
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=not binary)
    if result.returncode != 0:
        raise SpecError(f"git {' '.join(args)}: {(result.stderr if not binary else result.stderr.decode())[-300:]}")
    return result.stdout


def _param(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _yaml(path: Path):
    """A YAML file as DVC reads it: YAML 1.2 floats, so the lock's `3e-05` is the float the spec's `3.0e-5` is
    (PyYAML's 1.1 rules read it as a string, and every such param would look changed). libyaml's parser where
    installed: dvc.lock is megabytes."""
    return yaml.load(path.read_text(), Loader=_Yaml12Loader)


def _pipeline(repo: Path) -> dict:
    """dvc.lock, dvc.yaml and params.yaml, parsed once for every stage a call looks at."""
    return {"lock": _yaml(repo / "dvc.lock"), "pipeline": _yaml(repo / "dvc.yaml"), "params": _yaml(repo / "params.yaml")}


def stale_code(repo: Path, stage: str, files: dict | None = None) -> list[StaleCode]:
    """The code files whose content differs from what the committed lock records for `stage`; refuses (with the
    first such input named) a stage whose params or command changed. `files`: `_pipeline(repo)`, when the caller
    already has it."""
    files = files or _pipeline(repo)
    lock, pipeline, params = files["lock"], files["pipeline"], files["params"]
    if stage not in lock.get("stages", {}):
        raise NotARefactor(f"{stage}: not in dvc.lock (never run): run it with `dvc repro -s {stage}`")
    locked, defined = lock["stages"][stage], pipeline["stages"].get(stage)
    if defined is None:
        raise SpecError(f"{stage}: no such stage in dvc.yaml")
    if locked["cmd"] != defined["cmd"].replace("${profile}", str(params.get("profile"))):
        raise NotARefactor(f"{stage}: its command changed ({locked['cmd']!r}): rerun it")
    for file, values in locked.get("params", {}).items():
        current = _yaml(repo / file) if (repo / file).is_file() else {}
        for key, value in values.items():
            if _param(current, key) != value:
                raise NotARefactor(f"{stage}: param {file}:{key} changed: a spec or catalog change is not a refactor; "
                                   f"rerun it with `dvc repro -s {stage}`")
    committed = {d["path"]: d["md5"] for d in locked.get("deps", [])}
    working = [d if isinstance(d, str) else next(iter(d)) for d in defined.get("deps", [])]
    now = {path: _md5(repo / path) for path in committed}
    changed = [StaleCode(path, md5, now[path]) for path, md5 in committed.items() if now[path] != md5]
    changed += [StaleCode(path, None, _md5(repo / path)) for path in working if path not in committed]
    return changed


def find_content(repo: Path, path: str, md5: str) -> tuple[str, bytes]:
    """The newest revision (any branch) whose `path` has content hashing to `md5`, and that content."""
    revisions = _git(repo, "log", "--all", "--format=%H", "--", path).split()
    seen = set()
    for rev in revisions:
        for candidate in (rev, f"{rev}^"):  # a commit that deleted the file holds it in its parent
            try:
                blob = _git(repo, "rev-parse", f"{candidate}:{path}").strip()
            except SpecError:
                continue
            if blob in seen:
                continue
            seen.add(blob)
            content = _git(repo, "cat-file", "blob", blob, binary=True)
            if hashlib.md5(content).hexdigest() == md5:
                return candidate, content
    raise SpecError(f"{path}: no revision in git's history has the content dvc.lock records (md5 {md5}); the code "
                    "that made the committed run cannot be rebuilt, so the stage must be rerun")


def _committed_tree(repo: Path, stage: str, scratch: Path) -> tuple[Path, dict[str, str]]:
    """A worktree of HEAD with every dependency of the stage at the content the committed lock records."""
    tree = scratch / "committed"
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), "HEAD")
    lock = _yaml(repo / "dvc.lock")
    head = _git(repo, "rev-parse", "HEAD").strip()
    found = {}
    for dep in lock["stages"][stage].get("deps", []):
        target = tree / dep["path"]
        if _md5(target) != dep["md5"]:
            found[dep["path"]], content = find_content(repo, dep["path"], dep["md5"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        elif _md5(repo / dep["path"]) != dep["md5"]:  # changed in the working tree only: HEAD holds the old code
            found[dep["path"]] = head
    return tree, found


def _run(tree: Path, spec: str, profile: str, overrides: tuple[str, ...], out: Path, cache_dir: Path | None) -> Path:
    command = [sys.executable, "-m", "harness.cli", "run", spec, "--profile", profile, "--no-analyze", "--quiet",
               "--results-dir", str(out)]
    for override in overrides:
        command += ["--set", override]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the tree's own code, not the installed package
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SpecError(f"{spec} ({profile}) failed in {tree}: {(result.stderr or result.stdout).strip()[-400:]}")
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def _comparable(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".csv" or not lines:
        return lines
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in VOLATILE_COLUMNS]
    return [",".join(cells[i] for i in keep if i < len(cells)) for cells in (line.split(",") for line in lines)]


def first_difference(committed: Path, working: Path) -> str | None:
    """None when every compared output is identical; else the first differing file and line."""
    for name in COMPARED:
        a, b = committed / name, working / name
        if a.is_file() != b.is_file():
            return f"{name}: written by only one of the two codes"
        if not a.is_file():
            continue
        old, new = _comparable(a), _comparable(b)
        for number, (x, y) in enumerate(zip(old, new), 1):
            if x != y:
                return f"{name} line {number} differs: committed code {x[:160]!r}, working code {y[:160]!r}"
        if len(old) != len(new):
            return f"{name}: {len(old)} lines from the committed code, {len(new)} from the working code"
    return None


def _shortened(spec) -> tuple[str, ...]:
    """The overrides of the shortened local variant: the kind's own, and those of optional fields the spec sets."""
    overrides = list(SHORT_LOCAL[spec.kind])
    for field, extra in SHORT_LOCAL_WHERE_SET.get(spec.kind, {}).items():
        if getattr(spec, field, None) is not None:
            overrides += extra
    return tuple(overrides)


def certify(repo: Path, stage: str, local: bool = True, cache_dir: Path | None = None, commit: bool = True,
            echo=print) -> Certificate:
    """Check one stale run stage as described in the module docstring; raises SpecError naming the first
    difference (the lock is then left as it was)."""
    if not stage.startswith("run-"):
        raise SpecError(f"{stage}: certify carries run stages forward (analyses and the report rerun in seconds)")
    name = stage.removeprefix("run-")
    spec = _yaml(repo / "params.yaml")["specs"].get(name)
    if spec is None:
        raise SpecError(f"{stage}: {name!r} is not a spec params.yaml runs")
    changed = stale_code(repo, stage)
    if not changed:
        raise SpecError(f"{stage}: up to date (nothing to certify)")
    from registry import load_spec

    loaded = load_spec(repo / spec, "local")
    kind = loaded.kind
    variants = [("tiny", ())] + ([("local", _shortened(loaded))] if local and kind in SHORT_LOCAL else [])
    head = _git(repo, "rev-parse", "HEAD").strip()
    certificate = Certificate(stage, spec, kind, head, changed)
    scratch = Path(tempfile.mkdtemp(prefix="certify-"))
    tree = None
    try:
        tree, certificate.found_at = _committed_tree(repo, stage, scratch)
        for profile, overrides in variants:
            echo(f"{stage}: {profile}{' (shortened: ' + ' '.join(overrides) + ')' if overrides else ''}: "
                 "running the committed code, then the working code")
            old = _run(tree, spec, profile, overrides, scratch / f"old-{profile}", cache_dir)
            new = _run(repo, spec, profile, overrides, scratch / f"new-{profile}", cache_dir)
            difference = first_difference(old, new)
            if difference:
                raise NotIdentical(f"{stage}: not a refactor on the {profile} profile: {difference}; rerun it with "
                                   f"`dvc repro -s {stage}`")
            certificate.variants.append({"profile": profile, "overrides": list(overrides), "identical": {
                file: hashlib.sha256((new / file).read_bytes()).hexdigest() for file in COMPARED if (new / file).is_file()}})
    finally:
        if tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    certificate.certified_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if commit:
        result = subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", stage], cwd=repo,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SpecError(f"{stage}: dvc commit failed: {(result.stderr or result.stdout).strip()[-300:]}")
    path = repo / CERTIFICATES / f"{stage}.json"
    path.parent.mkdir(exist_ok=True)
    record = {**certificate.__dict__, "changed": [c.__dict__ for c in certificate.changed],
              "local_variant": "shortened local profile" if len(certificate.variants) > 1 else
              f"none (the {kind} kind has no shortened local setting, or --no-local)"}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return certificate


def stale_run_stages(repo: Path) -> list[str]:
    """Every run stage of dvc.yaml whose committed lock no longer matches its inputs (by content hash)."""
    files = _pipeline(repo)
    stale = []
    for stage in files["pipeline"]["stages"]:
        if not stage.startswith("run-"):
            continue
        try:
            if stale_code(repo, stage, files):
                stale.append(stage)
        except NotARefactor:
            stale.append(stage)
    return stale
