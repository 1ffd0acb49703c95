"""dvc.yaml / params.yaml stay in step with specs/, and `dvc repro` really regenerates everything."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, SPECS
from harness.engine import runnable_profiles
from registry import load_spec_all_profiles


def test_params_list_exactly_the_specs_runnable_on_the_profile():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    runnable = {p.stem for p in SPECS if params["profile"] in runnable_profiles(load_spec_all_profiles(p))}
    assert set(params["specs"]) == runnable
    for name, path in params["specs"].items():
        assert Path(path) == Path("specs") / f"{name}.yaml"


def test_every_file_a_stage_reads_is_one_of_its_dependencies():
    """A stage depends on its spec, specs/base and specs/prompts, so a spec that dvc runs may extend
    only partial specs in specs/base: extending another task spec would hide a change from dvc."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base = (REPO / "specs" / "base").resolve()
    for name, path in params["specs"].items():
        current = REPO / path
        while (parent := yaml.safe_load(current.read_text()).get("extends")) is not None:
            current = (current.parent / parent).resolve()
            assert current.is_relative_to(base), f"{path} extends {current.relative_to(REPO)}, outside specs/base"


def test_dvc_config_turns_off_analytics_and_update_checks():
    config = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


def test_stage_outputs_do_not_overlap():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["run"]["do"]
    paths = [next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots") for o in stage[key]]
    assert len(paths) == len(set(paths))
    assert not any(a != b and b.startswith(a.rstrip("/") + "/") for a in paths for b in paths)


def test_dvc_repro_regenerates_results_and_reports_then_does_nothing(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    for item in ("dvc.yaml", "specs", ".dvcignore", "benchmarks/results"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / item)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    # the mechanics on two stages of different kinds; every spec runs in tests/test_every_spec.py
    params["specs"] = {name: params["specs"][name] for name in ("residual_gain_local", "sst2_8tok")}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    # code dependencies: copies of the packages under test, which the stages hash
    for package in ("harness", "registry"):
        shutil.copytree(REPO / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd):
        result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", work / ".dvc" / "config")
    first = sh(sys.executable, "-m", "dvc", "repro")
    for name in params["specs"]:
        assert f"Running stage 'run@{name}'" in first
        assert (work / "results" / name / "metrics.json").is_file()
        assert (work / "reports" / f"{name}.md").is_file()
    assert "Running stage 'report'" in first
    second = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in second and "up to date" in second


def test_provenance_names_uncommitted_changes_but_not_the_lock_file_dvc_rewrites(tmp_path, monkeypatch):
    from harness.engine import _git_state

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "sub").mkdir()
    for name in ("dvc.lock", "sub/spec.yaml"):
        (tmp_path / name).write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.chdir(tmp_path / "sub")  # the check covers the whole repository, wherever it runs
    (tmp_path / "dvc.lock").write_text("b\n")
    (tmp_path / "untracked.txt").write_text("x\n")
    state = _git_state()
    assert len(state["commit"]) == 40 and state["dirty"] is False and state["modified"] == []
    (tmp_path / "sub" / "spec.yaml").write_text("b\n")
    state = _git_state()
    assert state["dirty"] is True and state["modified"] == ["sub/spec.yaml"]
