import json

import pytest

from harness.data import DataError, load_items, synthetic_items
from registry.catalog import dataset_entry


def _mirror(tmp_path, name, split, rows):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


def test_mirror_rows_are_normalised_and_sampled_reproducibly(tmp_path):
    rows = [{"text": f"question {i} ?", "label": i % 6} for i in range(50)]
    mirror = _mirror(tmp_path, "trec", "test", rows)
    items = load_items("trec", "test", profile="local", mirror=mirror, limit=10, seed=3)
    again = load_items("trec", "test", profile="local", mirror=mirror, limit=10, seed=3)
    other = load_items("trec", "test", profile="local", mirror=mirror, limit=10, seed=4)
    assert items == again and items != other and len(items) == 10
    first = items[0]
    index = int(first["id"].split(":")[1])
    assert first["text"] == rows[index]["text"] and first["label_name"] == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"][rows[index]["label"]]


def test_missing_split_and_bad_labels_are_named(tmp_path):
    mirror = _mirror(tmp_path, "ag_news", "test", [{"text": "a", "label": 0}])
    with pytest.raises(DataError, match=r"ag_news: split 'train' is not in the mirror .* the mirror holds: test"):
        load_items("ag_news", "train", profile="local", mirror=mirror)
    # the message lists what the mirror folder holds, not what the catalog expects it to hold (train, test)
    holey = _mirror(tmp_path / "holey", "banking77", "test", [{"text": "a", "label": 0}])
    with pytest.raises(DataError, match=r"banking77: split 'train' is not in the mirror .* the mirror holds: test\)$"):
        load_items("banking77", "train", profile="local", mirror=holey)
    _mirror(tmp_path, "sst2", "validation", [{"text": "fine", "label": 0}, {"text": "odd", "label": 7}])
    with pytest.raises(DataError, match=r"sst2: label 7 of row validation:1 is outside 0..1"):
        load_items("sst2", "validation", profile="local", mirror=tmp_path)
    _mirror(tmp_path, "banking77", "test", [{"text": "x", "label": 1, "label_name": "activate_my_card"}])
    with pytest.raises(DataError, match="names label 1 'activate_my_card', but the catalog's label 1 is 'age_limit'"):
        load_items("banking77", "test", profile="local", mirror=tmp_path)
    _mirror(tmp_path, "sst2", "train", [{"sentence": "no text column", "label": 0}])
    with pytest.raises(DataError, match=r"sst2: row train:0 has no column 'text'"):
        load_items("sst2", "train", profile="local", mirror=tmp_path)


def test_generation_answers_follow_the_marker(tmp_path):
    rows = [{"question": "q?", "answer": "work\n#### 1,080"}]
    items = load_items("gsm8k", "test", profile="local", mirror=_mirror(tmp_path, "gsm8k", "test", rows))
    assert items[0]["answer"] == "1080" and items[0]["solution"].endswith("#### 1,080")


def test_synthetic_items_fit_each_task():
    cls = synthetic_items(dataset_entry("banking77"), "train", 20, 0)
    assert all(item["label_name"] in item["text"] for item in cls)
    assert synthetic_items(dataset_entry("banking77"), "train", 20, 0) == cls
    assert {i["text"] for i in synthetic_items(dataset_entry("banking77"), "test", 20, 0)} != {i["text"] for i in cls}
    mc = synthetic_items(dataset_entry("piqa"), "validation", 5, 0)
    assert all(len(i["choices"]) == 2 and i["question"].endswith(i["choices"][i["label"]]) for i in mc)
    assert all(len(i["choices"]) == 5 for i in synthetic_items(dataset_entry("commonsense_qa"), "validation", 5, 0))
    gen = synthetic_items(dataset_entry("gsm8k"), "test", 5, 0)
    assert all(str(eval(i["question"][8:-1].replace("plus", "+"))) == i["answer"] for i in gen)


def test_hub_is_used_without_a_mirror_and_fails_in_one_line():
    with pytest.raises(DataError, match=r"^sst2: could not load 'nyu-mll/glue' from the hub .* HARNESS_DATA_MIRROR") as info:
        load_items("sst2", "validation", profile="local", mirror=None)
    assert "\n" not in str(info.value)
