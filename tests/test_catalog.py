import sys

from registry.catalog import GGUFWheelSource, dataset_catalog, model_catalog


def test_registry_does_not_import_torch():
    import subprocess

    code = "import sys, registry, registry.kinds, registry.catalog; registry.catalog.model_catalog(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_every_model_has_a_tiny_source():
    for name, entry in model_catalog().items():
        assert "tiny" in entry.sources, name


def test_local_models_are_gguf_wheels_with_checksums():
    """Every pretrained local model comes from a checksummed PyPI wheel; the only other local model is
    seed 004's toy, which the report itself initialised at random."""
    local = {n: e.sources["local"] for n, e in model_catalog().items() if "local" in e.sources}
    assert set(local) == {"smollm2_135m_instruct", "gemma3_270m", "mixtral_toy"}
    for name, source in local.items():
        if name == "mixtral_toy":
            assert source == model_catalog()[name].sources["tiny"] and source.init_seed == 42
            continue
        assert isinstance(source, GGUFWheelSource)
        assert len(source.sha256) == 64 and all(len(w.sha256) == 64 for w in source.wheels)


def test_dataset_catalog_matches_the_mirror_layout():
    catalog = dataset_catalog()
    assert len(catalog["banking77"].label_names) == 77
    assert catalog["trec"].label_names[:3] == ["ABBR", "ENTY", "DESC"]  # not alphabetical
    assert catalog["ag_news"].mirror_splits == ["test"]
    assert catalog["boolq"].mirror_splits == [] and catalog["commonsense_qa"].mirror_splits == []
