"""`harness certify`: a refactor is carried forward only when the committed code and the working code write the
same outputs; a behaviour change or a spec change is refused and the lock left alone."""

import json
import subprocess
import sys

import pytest


def _status(sh) -> str:
    return sh(sys.executable, "-m", "dvc", "status", "run-sst2_8tok")


@pytest.mark.slow
def test_a_refactor_is_certified_and_a_behaviour_change_refused(tiny_project):
    work, sh = tiny_project  # reproduced and committed
    lock = (work / "dvc.lock").read_text()
    executor = work / "harness" / "kinds" / "bridge" / "executor.py"
    source = executor.read_text()
    certify = lambda *args: subprocess.run(  # noqa: E731
        ["harness", "certify", *args, "--no-local"], cwd=work, env=sh.env, capture_output=True, text=True, timeout=900)

    # a refactor: the code changes, what it computes does not
    executor.write_text(source + "\n# a comment only\n")
    assert "changed" in _status(sh)
    result = certify()  # no stage named: every stale run stage
    assert result.returncode == 0, result.stderr
    assert "run-sst2_8tok: identical on tiny" in result.stdout
    assert "changed" not in _status(sh)  # dvc.lock now records the new code
    certificate = json.loads((work / "certificates" / "run-sst2_8tok.json").read_text())
    assert [c["path"] for c in certificate["changed"]] == ["harness/kinds/bridge/executor.py"]
    assert certificate["found_at"]["harness/kinds/bridge/executor.py"]  # the committed code, rebuilt from git
    assert certificate["variants"][0]["profile"] == "tiny" and "records.jsonl" in certificate["variants"][0]["identical"]
    sh("git", "commit", "-q", "-am", "the refactor, certified")

    # a behaviour change: another initialisation seed trains another bridge (a part the spec loads)
    latent = work / "harness" / "kinds" / "bridge" / "latent_bridge.py"
    latent_source = latent.read_text()
    assert "torch.manual_seed(seed)\n" in latent_source
    latent.write_text(latent_source.replace("torch.manual_seed(seed)\n", "torch.manual_seed(seed + 1)\n", 1))
    before = (work / "dvc.lock").read_text()
    refused = certify("run-sst2_8tok")
    assert refused.returncode == 1
    assert "not a refactor on the tiny profile" in refused.stderr and "line" in refused.stderr
    assert (work / "dvc.lock").read_text() == before and before != lock

    # a spec change is never a refactor
    latent.write_text(latent_source)
    spec = work / "specs" / "sst2_8tok.yaml"
    spec.write_text(spec.read_text().replace("training: {steps: 2000,", "training: {steps: 1999,", 1))
    changed = certify("run-sst2_8tok")
    assert changed.returncode == 1 and "param specs/sst2_8tok.yaml:training changed" in changed.stderr


def test_a_float_param_dvc_wrote_as_3e_05_is_not_a_changed_param(tmp_path):
    """DVC writes 3.0e-5 into dvc.lock as `3e-05`, which YAML 1.1 reads as a string: certify reads the lock the
    way DVC does (YAML 1.2 floats), so an unchanged spec is not refused as a param change, and a changed one is."""
    from harness.certify import NotARefactor, stale_code

    (tmp_path / "params.yaml").write_text("profile: local\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  run-x:\n    cmd: harness run specs/x.yaml\n")
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "x.yaml"
    spec.write_text("selection:\n  lrs: [3.0e-5, 1.0e-4]\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  run-x:\n    cmd: harness run specs/x.yaml\n    params:\n"
        "      specs/x.yaml:\n        selection:\n          lrs:\n          - 3e-05\n          - 0.0001\n")
    assert stale_code(tmp_path, "run-x") == []
    spec.write_text("selection:\n  lrs: [3.0e-5, 2.0e-4]\n")
    with pytest.raises(NotARefactor, match="param specs/x.yaml:selection changed"):
        stale_code(tmp_path, "run-x")
