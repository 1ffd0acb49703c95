"""Where files live and how they are written: the default cache folder, atomic writes (a crash
leaves the previous complete file or folder, never half of one), unique temporary names (two
processes writing the same file never share one), and a lock per run directory."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from filelock import FileLock, Timeout

# models, sender states and training state live here unless --cache-dir / HARNESS_CACHE_DIR say otherwise
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "latent-harness"


class RunLocked(RuntimeError):
    """Another process holds the lock of a run directory or a training state folder."""


class WriteFailed(OSError):
    """A result, cache or report file could not be written (read-only folder, disk full, not a folder)."""


def _unique_sibling(path: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a uniquely named sibling file, then rename it over `path` (for binary writers
    such as torch.save and safetensors that take a path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(path, ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    """Swap a completely written staging folder into place of `final` (callers hold `final`'s lock)."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    shutil.rmtree(backup, ignore_errors=True)
    if final.exists():
        os.replace(final, backup)
    os.replace(staging, final)
    shutil.rmtree(backup, ignore_errors=True)


def restore_interrupted(final: Path, max_age_seconds: float = 0.0) -> None:
    """Clean up after a process that died mid-write (callers hold `final`'s lock): if a swap was
    interrupted between its two renames, put the previous result back; delete orphaned staging
    folders older than `max_age_seconds`."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    if not final.exists() and backup.exists():
        os.replace(backup, final)
    now = time.time()
    for orphan in final.parent.glob(f".{final.name}.staging-*"):
        if now - orphan.stat().st_mtime >= max_age_seconds:
            shutil.rmtree(orphan, ignore_errors=True)


@contextmanager
def exclusive(path: Path, what: str):
    """Hold `<path>.lock` for the block; if another process holds it, stop with one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(f".{path.name}.lock")), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(f"{what} {path} is in use by another run (lock file {lock.lock_file}); "
                        f"wait for it to finish or stop it") from None
    try:
        yield
    finally:
        lock.release()


def check_writable(folder: Path, need_bytes: int = 0) -> None:
    """Fail before long work if `folder` cannot be created or written, or has less than `need_bytes` free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _unique_sibling(folder / "write-probe", ".tmp")
        probe.unlink()
    except OSError as exc:
        raise WriteFailed(exc.errno or errno.EIO, f"cannot write to {folder}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise WriteFailed(errno.ENOSPC, f"{folder} has {free / 2**20:.0f} MiB free, this run needs about "
                                        f"{need_bytes / 2**20:.0f} MiB")


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
