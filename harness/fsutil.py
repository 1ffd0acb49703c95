"""Where files live and how they are written: the default cache folder, atomic writes (a crash
leaves the previous complete file or folder, never half of one), unique temporary names (two
processes writing the same file never share one), and a lock per run directory."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from filelock import FileLock, Timeout

# models, sender states and training state live here unless --cache-dir / HARNESS_CACHE_DIR say otherwise
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "latent-harness"


class RunLocked(RuntimeError):
    """Another process holds the lock of a run directory or a training state folder."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with a message that says truthfully what the interrupted command left in place."""


class WriteFailed(OSError):
    """A result, cache or report file could not be written (read-only folder, disk full, not a folder)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _shared_mode(path: Path, folder: bool) -> None:
    """tempfile creates 0600 files and 0700 folders; give what we write the modes the user's umask asks for
    (0644 / 0755 under umask 022), so a shared results folder stays readable."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_UMASK)


def _unique_sibling(path: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    _shared_mode(Path(tmp), folder=False)
    return Path(tmp)


@contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, so a swap of two renames is never cut between them;
    a signal that arrives meanwhile is raised afterwards. Only the main thread can do this; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    handlers = {sig: signal.signal(sig, lambda number, frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for number in received[:1]:
            signal.raise_signal(number)


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
        _shared_mode(Path(tmp), folder=False)
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
    """Every row of a JSON-lines file; a bad line raises ValueError naming its line number in the file."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: {exc.msg} (column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"line {number}: not a JSON object")
            rows.append(row)
    return rows


def staging_dir(final: Path) -> Path:
    """A fresh sibling folder to build `final` in (same filesystem, so the swap is a rename)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-"))
    _shared_mode(stage, folder=True)
    return stage


def _remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder tree, if there."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a completely written staging folder into place of `final` (callers hold `final`'s lock). The two
    renames run with interrupts deferred; a `final` that is a link to a folder is followed (callers resolve it)."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    _remove(backup)
    with interrupts_deferred():
        if final.exists() or final.is_symlink():
            os.replace(final, backup)
        os.replace(staging, final)
    _remove(backup)


def real_dir(path: Path) -> Path:
    """`path`, or where it points when it is a link: swaps and locks act on the real folder, so the link keeps
    working after the folder is replaced."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


def restore_interrupted(final: Path, max_age_seconds: float = 0.0) -> None:
    """Clean up after a process that died mid-write (callers hold `final`'s lock): if a swap was
    interrupted between its two renames, put the previous result back; delete orphaned staging
    folders older than `max_age_seconds`."""
    final = Path(final)
    backup = final.with_name(f".{final.name}.previous")
    if not final.exists() and (backup.exists() or backup.is_symlink()):
        os.replace(backup, final)
    now = time.time()
    for orphan in final.parent.glob(f".{final.name}.staging-*"):
        if now - orphan.lstat().st_mtime >= max_age_seconds:
            _remove(orphan)


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

    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row or None in row.values():  # a row cut short, or one with more cells than the header
                raise ValueError(f"line {reader.line_num}: {len(reader.fieldnames or [])} columns in the header, "
                                 f"a different number in this row (a truncated or damaged file)")
            rows.append({k: parse(v) for k, v in row.items() if v != ""})
    return rows
