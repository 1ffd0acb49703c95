"""Every spec in specs/ validates under every profile, and malformed specs fail clearly."""

import json
import subprocess
import sys

import pytest

from conftest import MINIMAL_RESIDUAL, REPO, SPECS
from registry.catalog import runnable_profiles
from registry import SpecError, load_spec, load_spec_all_profiles
from registry.kinds import KINDS, spec_json_schema


def test_specs_folder_is_not_empty():
    assert (REPO / "specs" / "residual_gain_local.yaml") in SPECS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_validates_under_every_profile(path):
    by_profile = load_spec_all_profiles(path)
    assert set(by_profile) == {"tiny", "local", "paper"}
    for spec in by_profile.values():
        assert spec.name == path.stem, "a spec's name must equal its file name"
    # CI runs every spec in the tiny profile, so each must be runnable there
    assert "tiny" in runnable_profiles(by_profile)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_expected_values_cite_a_section(path):
    spec = load_spec(path, "tiny")
    for exp in spec.expected:
        assert exp.section.strip(), exp.metric


def _error(path, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    return message


def test_unknown_field_names_file_and_field(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "temperture: 0.7\n")
    message = _error(path)
    assert message.startswith(str(path) + ": temperture: unknown field")


def test_unknown_nested_field(write_spec):
    path = write_spec(MINIMAL_RESIDUAL.replace('{id: a, text: "The capital of France is"}',
                                               '{id: a, text: "x", colour: red}'))
    assert f"{path}: prompts.0.colour: unknown field" in _error(path)


def test_wrong_type(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "seed: many\n")
    message = _error(path)
    assert message.startswith(f"{path}: seed: ") and "integer" in message and "'many'" in message


def test_unknown_model_suggests_the_closest(write_spec):
    path = write_spec(MINIMAL_RESIDUAL.replace("[llama31_8b]", "[llama31_8bb]"))
    message = _error(path)
    assert message.startswith(f"{path}: models.0: unknown model 'llama31_8bb'")
    assert "did you mean 'llama31_8b'" in message


def test_unknown_kind_lists_the_known(write_spec):
    path = write_spec(MINIMAL_RESIDUAL.replace("kind: residual_gain", "kind: residual_gian"))
    message = _error(path)
    assert message.startswith(f"{path}: kind: unknown kind 'residual_gian'")
    for kind in KINDS:
        assert kind in message


def test_missing_kind(write_spec):
    path = write_spec(MINIMAL_RESIDUAL.replace("kind: residual_gain\n", ""))
    assert "no `kind` field" in _error(path)


def test_missing_required_field(write_spec):
    path = write_spec(MINIMAL_RESIDUAL.replace("models: [llama31_8b]\n", ""))
    assert f"{path}: models: required field is missing" in _error(path)


def test_yaml_syntax_error_names_line(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "models: [a, b\n")
    message = _error(path)
    assert message.startswith(f"{path}:") and "YAML syntax error" in message


def test_extends_missing_file(write_spec):
    path = write_spec("extends: nowhere.yaml\nseed: 1\n")
    message = _error(path)
    assert message.startswith(f"{path}: extends: extended spec 'nowhere.yaml' not found")


def test_extends_cycle(write_spec):
    write_spec("extends: b.yaml\n", "a.yaml")
    path = write_spec("extends: a.yaml\n", "b.yaml")
    assert "`extends` forms a cycle" in _error(path)


def test_extends_deep_merges_and_does_not_inherit_name_or_expected(write_spec):
    write_spec(MINIMAL_RESIDUAL + "name: base\nearly_layers_fraction: 0.5\n"
               "expected: [{metric: x, value: 1, section: '1'}]\n", "base.yaml")
    path = write_spec("extends: base.yaml\nseed: 7\nprompts: [{id: b, text: hello}]\n", "child_spec.yaml")
    spec = load_spec(path)
    assert spec.name == "child_spec"  # from the file name, not the parent's
    assert spec.seed == 7 and spec.early_layers_fraction == 0.5 and spec.models == ["llama31_8b"]
    assert [p.id for p in spec.prompts] == ["b"]  # lists are replaced, not concatenated
    assert spec.expected == []


def test_set_overrides_are_parsed_and_validated(write_spec):
    path = write_spec(MINIMAL_RESIDUAL)
    spec = load_spec(path, overrides=["seed=3", "prompts.0.text=Hello there", "early_layers_fraction=5e-1"])
    assert spec.seed == 3 and spec.prompts[0].text == "Hello there" and spec.early_layers_fraction == 0.5
    assert f"{path}: seed:" in _error(path, overrides=["seed=-1"])
    assert "expected KEY=VALUE" in _error(path, overrides=["seed"])
    assert "list index '4' out of range" in _error(path, overrides=["prompts.4.text=x"])
    assert "unknown field" in _error(path, overrides=["nonsense.deep=1"])


def test_yaml_11_exponent_floats_are_numbers(write_spec):
    # DVC and PyYAML write 2e-05 style floats that YAML 1.1 loaders read as strings
    path = write_spec(MINIMAL_RESIDUAL + "early_layers_fraction: 2e-01\n")
    assert load_spec(path).early_layers_fraction == pytest.approx(0.2)
    path = write_spec(MINIMAL_RESIDUAL + "early_layers_fraction: '3e-1'\n", "quoted.yaml")
    assert load_spec(path).early_layers_fraction == pytest.approx(0.3)


def test_profile_overlay_applies_only_to_its_profile(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "profiles:\n  tiny: {seed: 9}\n")
    assert load_spec(path, "tiny").seed == 9
    assert load_spec(path, "paper").seed == 0
    bad = write_spec(MINIMAL_RESIDUAL + "profiles:\n  huge: {seed: 9}\n", "bad.yaml")
    assert "profiles.huge: unknown profile 'huge'" in _error(bad)


def test_pairs_must_use_listed_models(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "pairs: [{base: llama31_8b, instruct: llama31_8b_instruct}]\n")
    assert "pairs.0.instruct: 'llama31_8b_instruct' is not in `models`" in _error(path)


def test_ratios_must_use_listed_models_and_prompts(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "ratios: [{numerator: llama31_8b, denominator: mistral7b_v01, prompt: a}]\n")
    assert "ratios.0.denominator: 'mistral7b_v01' is not in `models`" in _error(path)
    path = write_spec(MINIMAL_RESIDUAL + "ratios: [{numerator: llama31_8b, denominator: llama31_8b, prompt: zz}]\n", "p.yaml")
    assert "ratios.0.prompt: 'zz' is not a prompt id" in _error(path)


def test_duplicate_prompt_ids(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "  - {id: a, text: again}\n")
    assert "prompt ids must be unique; repeated: a" in _error(path)


def test_json_schema_covers_every_kind():
    schema = spec_json_schema()
    text = json.dumps(schema)
    for kind in KINDS:
        assert kind in text
    assert schema["discriminator"]["propertyName"] == "kind"


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_validate_ok_and_failure(write_spec):
    ok = _cli("validate")
    assert ok.returncode == 0, ok.stderr
    assert all(f"ok     specs/{p.name}" in ok.stdout for p in SPECS)
    bad = write_spec(MINIMAL_RESIDUAL.replace("[llama31_8b]", "[gpt5]"))
    result = _cli("validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: {bad}: models.0: unknown model 'gpt5' (models are listed in registry/catalog/models.yaml)"


def test_cli_run_refuses_a_model_without_a_source_for_the_profile(tmp_path):
    result = _cli("run", "specs/residual_gain_paper.yaml", "--profile", "local", "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: specs/residual_gain_paper.yaml: model 'pythia_6_9b' has no source "
                                     "for profile 'local' (it has: paper, tiny)")
    assert not any(tmp_path.iterdir()), "nothing is written when a spec cannot run"


def test_set_overrides_win_over_profile_overlays(write_spec):
    path = write_spec(MINIMAL_RESIDUAL + "profiles:\n  local: {seed: 5}\n")
    assert load_spec(path, "local").seed == 5
    assert load_spec(path, "local", overrides=["seed=8"]).seed == 8
    assert load_spec(path, "local", overrides=["profiles.local.seed=6"]).seed == 6


# ---------------------------------------------------------------------------- provenance: seed report, reference, none
def test_a_spec_documented_nowhere_validates_and_claims_need_a_document(write_spec):
    own = MINIMAL_RESIDUAL.replace("source: {seed: 001_2238a690a37813ca.txt}\n", "")
    assert load_spec(write_spec(own)).source is None
    cited = load_spec(write_spec(own + "source: {reference: 'arXiv:2401.00001', sections: ['3.2']}\n"))
    assert cited.source.label() == "arXiv:2401.00001" and cited.source.seed is None
    assert "exactly one of `seed`" in _error(write_spec(
        own + "source: {seed: 001_2238a690a37813ca.txt, reference: a paper}\n"))
    assert "exactly one of `seed`" in _error(write_spec(own + "source: {sections: ['1']}\n"))
    message = _error(write_spec(own + "claims: [{id: h18_gain_tracks_entropy, section: '3'}]\n"))
    assert "`claims` quotes a document: name it under `source`" in message


def test_a_spec_documented_nowhere_runs_on_tiny_and_gets_a_page(tmp_path):
    from harness.engine import RunSettings
    from harness.report.render import build_reports
    from harness.workflow import run_and_analyze

    spec = tmp_path / "specs" / "my_gain.yaml"
    spec.parent.mkdir()
    spec.write_text(MINIMAL_RESIDUAL.replace("source: {seed: 001_2238a690a37813ca.txt}\n", ""), encoding="utf-8")
    settings = RunSettings(profile="tiny", results_dir=tmp_path / "results", cache_dir=tmp_path / "cache",
                           device="cpu", show_progress=False)
    run_and_analyze(spec, settings)
    build_reports([spec], tmp_path / "results", tmp_path / "reports")
    page = (tmp_path / "reports" / "my_gain.md").read_text(encoding="utf-8")
    assert "source: none (an experiment documented in no report)" in page
    listing = subprocess.run([sys.executable, "-m", "harness.cli", "list", "--specs", str(spec.parent),
                              "--results-dir", str(tmp_path / "results")], capture_output=True, text=True, check=True)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("my_gain"))
    assert row.split()[1:3] == ["residual_gain", "—"] and "tiny" in row


def test_a_file_is_parsed_once_while_unchanged_and_again_once_edited(write_spec):
    from registry.loader import read_yaml_mapping

    path = write_spec(MINIMAL_RESIDUAL + "seed: 1\n")
    first = read_yaml_mapping(path)
    first["seed"] = 99  # the caller's copy: the next read does not see this
    assert read_yaml_mapping(path)["seed"] == 1
    path.write_text(MINIMAL_RESIDUAL + "seed: 22\n", encoding="utf-8")  # another size: read again
    assert load_spec(path).seed == 22
    path.write_text(MINIMAL_RESIDUAL + "seed: 33\n", encoding="utf-8")  # the same size, a later write
    assert load_spec(path).seed == 33
