"""Datasets by logical name: from the offline mirror folder, the hub, or synthetic (tiny profile).

Every item is normalised to one shape per task, with an `id` that locates the row in its
source split so records.jsonl can always be traced back:
  classification   {id, text, label, label_name}
  multiple_choice  {id, question, choices, label}
  generation       {id, question, answer, solution}
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from registry.catalog import DatasetEntry, dataset_entry


class DataError(RuntimeError):
    pass


SYNTHETIC_WORDS = ("the", "a", "report", "about", "this", "was", "very", "quite", "my", "it", "and", "then",
                   "people", "said", "new", "today", "with", "for", "of", "some")


def load_items(name: str, split: str, *, profile: str, mirror: Path | None, limit: int | None = None,
               seed: int = 0) -> list[dict]:
    """Items of `split`, a seeded sample of `limit` of them when a limit is given."""
    entry = dataset_entry(name)
    if profile == "tiny":
        return synthetic_items(entry, split, limit or 64, seed)
    rows = _mirror_rows(entry, split, mirror) if mirror is not None else _hub_rows(entry, split)
    columns = entry.mirror_columns if mirror is not None and entry.mirror_columns else entry.columns
    items = [normalise(entry, columns, row, f"{split}:{i}") for i, row in enumerate(rows)]
    return sample(items, limit, seed)


def sample(items: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded random subset in source order (the whole list when limit is None or larger)."""
    if limit is None or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def _mirror_rows(entry: DatasetEntry, split: str, mirror: Path) -> list[dict]:
    path = Path(mirror) / entry.name / f"{split}.jsonl"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in path.parent.glob("*.jsonl"))) or "nothing"
        raise DataError(f"{entry.name}: split {split!r} is not in the mirror ({path} missing; the mirror holds: {have})")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
    return rows


def _hub_rows(entry: DatasetEntry, split: str) -> list[dict]:
    if split not in entry.splits:
        raise DataError(f"{entry.name}: unknown split {split!r} (known: {', '.join(entry.splits)})")
    import datasets

    try:
        data = datasets.load_dataset(entry.hf_id, entry.hf_config, split=entry.splits[split])
    except Exception as exc:  # the hub raises many types; the message is what matters
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{entry.name}: could not load {entry.hf_id!r} from the hub ({first}); "
                        "set HARNESS_DATA_MIRROR or --data-mirror to use an offline copy") from None
    return [dict(row) for row in data]


def _column(row: dict, column: str, entry: DatasetEntry, item_id: str):
    if column not in row:
        raise DataError(f"{entry.name}: row {item_id} has no column {column!r} (columns: {', '.join(row)})")
    return row[column]


def _label_index(entry: DatasetEntry, value, item_id: str, n_choices: int | None = None) -> int:
    names = entry.label_names
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str) and not value.isdigit():
        if value in names:
            return names.index(value)
        if n_choices and len(value) == 1 and value.isalpha():  # answer keys A, B, C, ...
            index = ord(value.upper()) - ord("A")
            if 0 <= index < n_choices:
                return index
        raise DataError(f"{entry.name}: label {value!r} of row {item_id} is not in the label list")
    index = int(value)
    bound = n_choices if n_choices is not None else len(names)
    if not 0 <= index < bound:
        raise DataError(f"{entry.name}: label {index} of row {item_id} is outside 0..{bound - 1}")
    return index


def normalise(entry: DatasetEntry, columns: dict, row: dict, item_id: str) -> dict:
    if entry.task == "classification":
        text_cols = columns["text"] if isinstance(columns["text"], list) else [columns["text"]]
        text = "\n".join(str(_column(row, c, entry, item_id)).strip() for c in text_cols)
        label = _label_index(entry, _column(row, columns["label"], entry, item_id), item_id)
        if "label_name" in row and row["label_name"] != entry.label_names[label]:
            raise DataError(f"{entry.name}: row {item_id} names label {label} {row['label_name']!r}, "
                            f"but the catalog's label {label} is {entry.label_names[label]!r}")
        return {"id": item_id, "text": text, "label": label, "label_name": entry.label_names[label]}
    if entry.task == "multiple_choice":
        spec = columns["choices"]
        if isinstance(spec, list):
            choices = [str(_column(row, c, entry, item_id)) for c in spec]
        else:
            raw = _column(row, spec, entry, item_id)
            choices = list(raw["text"]) if isinstance(raw, dict) else [str(c) for c in raw]
        label = _label_index(entry, _column(row, columns["label"], entry, item_id), item_id, len(choices))
        return {"id": item_id, "question": str(_column(row, columns["question"], entry, item_id)),
                "choices": choices, "label": label}
    solution = str(_column(row, columns["answer"], entry, item_id))
    answer = solution.split(entry.answer_marker)[-1].strip() if entry.answer_marker else solution.strip()
    return {"id": item_id, "question": str(_column(row, columns["question"], entry, item_id)),
            "answer": answer.replace(",", ""), "solution": solution}


def synthetic_items(entry: DatasetEntry, split: str, n: int, seed: int) -> list[dict]:
    """Small generated data with the dataset's shape, for the tiny profile.

    Classification texts contain their label name among filler words, so a model can learn
    the task from a handful of examples; splits use different seeds so they never overlap.
    """
    rng = random.Random(f"{entry.name}:{split}:{seed}")
    items = []
    for i in range(n):
        filler = lambda k: " ".join(rng.choice(SYNTHETIC_WORDS) for _ in range(k))  # noqa: E731
        item_id = f"synthetic-{split}:{i}"
        if entry.task == "classification":
            label = rng.randrange(len(entry.label_names))
            name = entry.label_names[label]
            items.append({"id": item_id, "text": f"{filler(3)} {name} {filler(3)}", "label": label, "label_name": name})
        elif entry.task == "multiple_choice":
            choices = rng.sample(SYNTHETIC_WORDS, entry.n_choices)
            label = rng.randrange(entry.n_choices)
            items.append({"id": item_id, "question": f"{filler(2)} pick {choices[label]}", "choices": choices,
                          "label": label})
        else:
            a, b = rng.randrange(10), rng.randrange(10)
            items.append({"id": item_id, "question": f"What is {a} plus {b}?", "answer": str(a + b),
                          "solution": f"{a} + {b} = {a + b}\n#### {a + b}"})
    return items
