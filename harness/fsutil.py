"""Where files live and how they are written: the default cache folder, and atomic writes (a crash
leaves the previous complete file or folder, never half of one)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

# models, sender states and training state live here unless --cache-dir / HARNESS_CACHE_DIR say otherwise
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "latent-harness"


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a sibling `.partial` file, then rename it over `path` (for binary writers
    such as torch.save and safetensors that take a path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    write(tmp)
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True, allow_nan=True) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def staging_dir(final: Path) -> Path:
    """A fresh sibling folder to build `final` in (same filesystem, so the swap is a rename)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a completely written staging folder into place of `final`."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    shutil.rmtree(backup, ignore_errors=True)
    if final.exists():
        os.replace(final, backup)
    os.replace(staging, final)
    shutil.rmtree(backup, ignore_errors=True)


def restore_interrupted(final: Path) -> None:
    """If a swap was interrupted between its two renames, put the previous result back."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    if not final.exists() and backup.exists():
        os.replace(backup, final)


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a CSV written by the engine, numbers parsed back (empty cells dropped)."""
    import csv

    def parse(value: str):
        try:
            return float(value)
        except ValueError:
            return value

    with open(path, encoding="utf-8", newline="") as handle:
        return [{k: parse(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
