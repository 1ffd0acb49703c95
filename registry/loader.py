"""YAML -> validated spec.

Resolution order: the file's `extends:` chain (deep merge, child wins; `name`, `expected` and
`claims` are never inherited), then the spec's own `profiles.<profile>` overlay for the profile it will
run under, then command-line `--set a.b=c` overrides, which win over everything (they are also
applied before the overlay, so `--set profiles.local.x=y` edits an overlay). Every problem
surfaces as one SpecError line naming the file and field.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from registry.base import PROFILES
from registry.errors import SpecError, format_validation_error
from registry.kinds import validate_spec
from registry.yaml_io import MAX_YAML_BYTES, parse_yaml

NOT_INHERITED = ("name", "expected", "claims")


def spec_files(paths: Iterable[str | Path]) -> list[Path]:
    """YAML files named directly or found (non-recursively) in the given folders."""
    found = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found += sorted(p for p in path.glob("*.yaml"))
        elif path.is_file():
            found.append(path)
        else:
            raise SpecError("no such file or folder", str(path))
    return found


def read_yaml_mapping(path: Path) -> dict:
    """The file's mapping, parsed once per process for the same content (a command that validates every spec
    under every profile reads each shared base file many times); the caller gets its own copy."""
    return copy.deepcopy(_shared_mapping(path))


def top_level_fields(path: Path) -> list[str]:
    """The fields a YAML mapping file sets itself (its `extends:` chain not merged), in file order."""
    return list(_shared_mapping(Path(path)))


def _shared_mapping(path: Path) -> dict:
    """The cached parse of `path`'s current bytes (read every time, so an edit is always seen): never hand it
    out to be changed."""
    where = str(path)
    if not path.is_file():
        raise SpecError("file not found", where)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise SpecError(f"{size:,} bytes: spec files are limited to {MAX_YAML_BYTES:,}", where)
    return _parsed_mapping(path.read_bytes(), where)


@functools.lru_cache(maxsize=256)
def _parsed_mapping(raw: bytes, where: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
                        where) from None
    data = parse_yaml(text, where)
    if not isinstance(data, dict):
        raise SpecError("a spec file must be a YAML mapping of field: value", where)
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge recursively; any other value (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_extends(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of `path` with its `extends:` chain merged in. Every extended file must lie
    inside the folder of the spec the chain starts from (no absolute paths, no `..` out of it)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, resolved))
        raise SpecError(f"`extends` forms a cycle: {cycle}", str(path), "extends")
    data = read_yaml_mapping(path)
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        return data
    if not isinstance(parent_ref, str) or not parent_ref.strip():
        raise SpecError("must be the path of another spec file, relative to this one", str(path), "extends")
    parent_path = path.parent / parent_ref
    top = (_chain[0] if _chain else resolved).parent
    if Path(parent_ref).is_absolute() or not parent_path.resolve().is_relative_to(top):
        raise SpecError(f"{parent_ref!r} is outside {top}; extend a spec in this folder or below it "
                        f"(a relative path such as base/bridge.yaml)", str(path), "extends")
    if not parent_path.is_file():
        raise SpecError(f"extended spec {parent_ref!r} not found (looked for {parent_path})", str(path), "extends")
    parent = resolve_extends(parent_path, (*_chain, resolved))
    for key in NOT_INHERITED:
        parent.pop(key, None)
    return deep_merge(parent, data)


def extends_chain(path: Path) -> list[Path]:
    """The spec file and every file its `extends:` chain reads, child first (paths as given, not resolved)."""
    path = Path(path)
    chain = [path]
    while True:
        parent_ref = read_yaml_mapping(chain[-1]).get("extends")
        if not isinstance(parent_ref, str) or len(chain) > 64:
            return chain
        chain.append(Path(chain[-1].parent, parent_ref))


def spec_files_read(path: str | Path) -> list[Path]:
    """Every file loading `path` reads: the spec, its `extends:` chain and the files its fields name
    (e.g. a prompts file), normalised relative to the working folder. These are a run's spec inputs."""
    path = Path(path)
    spec = load_spec(path, "local")
    files = extends_chain(path) + [path.parent / name for name in spec.input_files()]
    return list(dict.fromkeys(Path(os.path.normpath(f)) for f in files))


def apply_overrides(data: dict, assignments: Iterable[str]) -> dict:
    """Apply `a.b=c` assignments; values are parsed as YAML (numbers, lists, booleans)."""
    data = copy.deepcopy(data)
    for assignment in assignments:
        where = f"--set {assignment if len(assignment) <= 80 else assignment[:60] + '...'}"
        key, sep, raw_value = assignment.partition("=")
        if not sep or not key.strip():
            raise SpecError("expected KEY=VALUE, e.g. --set seed=3 or --set train.steps=100", where)
        value = parse_yaml(raw_value, where) if raw_value.strip() else ""
        parts = key.strip().split(".")
        target: Any = data
        for i, part in enumerate(parts[:-1]):
            target = _step_into(target, part, parts[: i + 1], where)
        _assign(target, parts[-1], value, where)
    return data


def _step_into(target: Any, part: str, path: list[str], where: str) -> Any:
    if isinstance(target, list):
        return target[_list_index(target, part, where)]
    if not isinstance(target, dict):
        raise SpecError(f"{'.'.join(path[:-1])} is not a mapping", where)
    if target.get(part) is None:
        target[part] = {}
    return target[part]


def _assign(target: Any, part: str, value: Any, where: str) -> None:
    if isinstance(target, list):
        target[_list_index(target, part, where)] = value
    elif isinstance(target, dict):
        target[part] = value
    else:
        raise SpecError(f"cannot set {part!r} inside a {type(target).__name__}", where)


def _list_index(items: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise SpecError(f"list index {part!r} out of range (the list has {len(items)} items)", where)
    return int(part)


def apply_profile(data: dict, profile: str, where: str) -> dict:
    """Deep-merge the spec's `profiles.<profile>` overlay over the spec."""
    if profile not in PROFILES:
        raise SpecError(f"unknown profile {profile!r} (expected one of: {', '.join(PROFILES)})", where)
    overlays = data.get("profiles") or {}
    if not isinstance(overlays, dict):
        raise SpecError("must map a profile name to field overrides", where, "profiles")
    for name, overlay in overlays.items():
        if name not in PROFILES:
            raise SpecError(f"unknown profile {name!r} (expected one of: {', '.join(PROFILES)})", where, f"profiles.{name}")
        if not isinstance(overlay, dict):
            raise SpecError("must be a mapping of field overrides", where, f"profiles.{name}")
        if "profiles" in overlay or "name" in overlay or "kind" in overlay:
            raise SpecError("a profile overlay cannot change name, kind or profiles", where, f"profiles.{name}")
    return deep_merge(data, overlays.get(profile) or {})


def validate_mapping(data: dict, where: str, spec_dir: Path | None = None, profile: str | None = None):
    """Validate a merged mapping. Validators see context["spec_dir"] (so fields naming other
    files resolve relative to the spec) and context["profile"] (so layer indices and hidden
    sizes are checked against the catalog models of the profile the spec will run under)."""
    try:
        return validate_spec(data, context={"spec_dir": spec_dir, "profile": profile})
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None


def load_spec(path: str | Path, profile: str = "local", overrides: Iterable[str] = ()):
    """Read, merge, override and validate a spec file for one profile."""
    return load_spec_profiles(path, (profile,), overrides)[profile]


def load_spec_all_profiles(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Validate the spec under every profile (overlays included): profile -> spec."""
    return load_spec_profiles(path, PROFILES, overrides)


def load_spec_profiles(path: str | Path, profiles: Iterable[str], overrides: Iterable[str] = ()) -> dict:
    """The spec validated under each of `profiles`: the file and its `extends:` chain are read and merged once."""
    path = Path(path)
    where = str(path)
    try:
        merged = resolve_extends(path)
        merged.setdefault("name", path.stem)
        merged = apply_overrides(merged, overrides)
        specs = {}
        for profile in profiles:
            data = apply_overrides(apply_profile(merged, profile, where), overrides)
            if data["name"] != path.stem:
                raise SpecError(f"must equal the file name {path.stem!r}: a spec's file name is its identity (its "
                                f"results go to results/{path.stem}/); rename the file instead", where, "name")
            specs[profile] = validate_mapping(data, where, path.parent, profile)
        return specs
    except SpecError as exc:
        raise exc.located(where) from None
