"""Nothing is chosen on evaluation items: every spec's evaluation items are disjoint from what it trains on and from
the development items that quick evaluation and selection runs read; the committed selection run reproduces the
settings the local bridge specs use."""

import functools

import pytest
import yaml

from conftest import REPO, SPECS, pending_stages
from harness.data import load_items
from harness.fsutil import read_jsonl
from harness.kinds.bridge.analysis import chosen_settings
from harness.kinds.bridge.task import build_task
from registry import load_spec
from registry.catalog import dataset_entry

MIRROR = REPO.parent / "shared" / "datasets"
BRIDGE_SPECS = [p for p in SPECS if load_spec(p, "paper").kind == "bridge"]


class _Items:
    """Just enough of a run context for build_task: the profile and dataset access (cached per split)."""

    def __init__(self, profile: str):
        self.profile = profile

    def items(self, dataset, split, limit=None, seed=None):
        mirror = MIRROR if split in dataset_entry(dataset).mirror_splits else None
        return list(_load(dataset, split, self.profile, mirror, limit, seed or 0))


@functools.lru_cache(maxsize=None)
def _load(dataset, split, profile, mirror, limit, seed):
    return tuple(load_items(dataset, split, profile=profile, mirror=mirror, limit=limit, seed=seed))


def _profiles():
    return ["tiny"] + (["local"] if MIRROR.is_dir() else [])


@pytest.mark.parametrize("profile", _profiles())
@pytest.mark.parametrize("path", BRIDGE_SPECS, ids=lambda p: p.stem)
def test_evaluation_items_are_disjoint_from_training_development_and_demonstrations(path, profile):
    spec = load_spec(path, profile)
    if profile == "local" and any(split not in dataset_entry(d).mirror_splits for d, split in spec.data_needs()):
        pytest.skip("not in the offline mirror")
    task = build_task(spec, _Items(profile))
    ids = {part: {item.id for item in getattr(task, part)} for part in ("train", "dev", "demos", "eval")}
    assert len(ids["eval"]) == len(task.eval) == spec.task.eval_items
    for part in ("train", "dev", "demos"):
        assert not ids["eval"] & ids[part], f"{part} items among the evaluation items"
    assert not ids["dev"] & ids["train"] and not ids["dev"] & ids["demos"]
    assert len(task.dev) == spec.task.dev_items >= spec.training.quick_eval_items  # quick evaluation reads dev only


def test_quick_evaluation_scores_development_items_only(monkeypatch, tmp_path):
    """The training loop's quick evaluation is handed the development items, never evaluation items."""
    from harness.engine import RunSettings, run_spec
    from harness.kinds.bridge import latent_bridge

    seen = []
    real = latent_bridge.accuracy

    def spy(task, items, results):
        seen.append({i.id for i in items})
        return real(task, items, results)

    monkeypatch.setattr(latent_bridge, "accuracy", spy)
    spec_path = REPO / "specs" / "sst2_8tok.yaml"
    run_spec(spec_path, RunSettings(profile="tiny", results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu",
                                    show_progress=False))
    spec = load_spec(spec_path, "tiny")
    task = build_task(spec, _Items("tiny"))
    assert seen and all(s <= {i.id for i in task.dev} for s in seen)
    assert not any(s & {i.id for i in task.eval} for s in seen)


def test_the_committed_selection_run_reproduces_the_settings_the_local_specs_use():
    spec = load_spec(REPO / "specs" / "bridge_selection_local.yaml", "local")
    records = read_jsonl(REPO / "results" / "bridge_selection_local" / "records.jsonl")
    chosen = chosen_settings(spec, records)
    assert set(chosen) == {"sender_layer", "lr", "prompt_tuning_lr"}
    used = load_spec(REPO / "specs" / "sst2_8tok.yaml", "local")
    assert chosen == {"sender_layer": used.bridge.sender_layer, "lr": used.training.lr,
                      "prompt_tuning_lr": used.evaluation.prompt_tuning.lr}
    # the run read development items of the training split only, the number the spec asks for
    assert {r["id"].split(":")[0] for r in records} == {spec.task.train_split}
    assert len({r["id"] for r in records}) == spec.task.dev_items
    base = yaml.safe_load((REPO / "specs" / "base" / "bridge.yaml").read_text())
    assert base["profiles"]["local"]["bridge"]["sender_layer"] == chosen["sender_layer"]


def test_alignment_held_out_texts_are_disjoint_from_the_fitting_texts():
    for name in ("alignment_procrustes_local", "alignment_adapters_local"):
        if f"run-{name}" in pending_stages():
            continue  # made before runs recorded their calibration split; declared for rerun in stages_not_run.yaml
        path = REPO / "results" / name / "records.jsonl"
        calibration = [r for r in read_jsonl(path) if r.get("record") == "calibration"]
        assert len(calibration) == 1, f"{name}: the run records which texts fit and which are held out"
        fit, held = set(calibration[0]["fit_ids"]), set(calibration[0]["heldout_ids"])
        assert fit and held and not fit & held


def test_a_selection_run_reads_only_its_grid_not_the_specs_own_learning_rates(tmp_path):
    """Why the committed selection run stays current when the specs adopt its winners: its records do not depend on
    the learning rates the spec file sets (every setting takes its own from the grid)."""
    from harness.engine import RunSettings, run_spec

    spec = REPO / "specs" / "bridge_selection_local.yaml"
    runs = []
    for n, overrides in enumerate(((), ("training.lr=0.5", "evaluation.prompt_tuning.lr=0.25"))):
        settings = RunSettings(profile="tiny", results_dir=tmp_path / str(n), cache_dir=tmp_path / "cache", device="cpu",
                               show_progress=False, overrides=overrides)
        runs.append((run_spec(spec, settings).run_dir / "records.jsonl").read_text())
    assert runs[0] == runs[1]
