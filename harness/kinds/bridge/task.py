"""A bridge task: its items, how each party reads them, and how answers are judged.

Evaluation items are a seeded sample of the eval split; training items come from the train
split, or, when both splits are the same (AG News and PIQA on the offline mirror), from the
rows of that split not chosen for evaluation, so the two never overlap. The shuffled training
pool gives, in order, the few-shot demonstrations, the training items and the development items
(quick evaluation and selection runs read those; nothing is ever chosen on evaluation items).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from harness.data import DataError
from harness.kinds.bridge.answers import NUMBER, final_number, normalise_number
from registry.kinds.bridge import PASSKEY, BridgeSpec

PASSKEY_FILLER = (
    "The grass is green and the sky is blue.", "The sun rises in the east.", "Rivers flow toward the sea.",
    "Birds sing in the early morning.", "The library opens at nine.", "A cold wind came from the north.",
)


@dataclass
class TaskItem:
    id: str
    input: str  # the task input after input_template
    answer: str  # gold answer text (a verbalizer, a passkey, a number)
    label: int | None = None  # classification only
    solution: str | None = None  # generation only: the worked solution (GSM8K: ends in '#### n')


@dataclass
class TaskData:
    spec: BridgeSpec
    train: list[TaskItem]
    eval: list[TaskItem]
    demos: list[TaskItem]
    dev: list[TaskItem] = field(default_factory=list)

    @property
    def task(self):
        return self.spec.task

    @property
    def is_classification(self) -> bool:
        return self.task.task_type in ("classification", "multiple_choice")

    @property
    def verbalizers(self) -> list[str]:
        return [self.task.verbalizer(n) for n in self.task.label_names()]

    def answer_text(self, item: TaskItem) -> str:
        """What the receiver is trained to write: answer_prefix + target_template + answer_suffix."""
        target = self.task.target_template.format(answer=item.answer, solution=item.solution, input=item.input)
        return self.task.answer_prefix + target + self.task.answer_suffix

    def sender_text(self, item: TaskItem) -> str:
        return self.task.sender_template.format(input=item.input)

    def item_text(self, text_input: str) -> str:
        return self.task.item_template.format(input=text_input)

    def instruction(self) -> str:
        text = self.task.instruction
        if self.task.list_labels and self.is_classification:
            text += ("\n" if text else "") + "Answer with one of: " + ", ".join(self.verbalizers) + "."
        return text + "\n\n" if text else ""

    def few_shot_block(self) -> str:
        return "".join(self.item_text(d.input) + self.answer_text(d) + "\n" for d in self.demos)

    # -------------------------------------------------------------- judging generated text
    def parse(self, generated: str):
        """The prediction a generation makes: a label index, a digit string, a number, or None (invalid)."""
        first_line = generated.strip().split("\n")[0].strip()
        kind = self.task.task_type
        if kind == PASSKEY:
            match = re.search(r"\d+", first_line)
            return match.group(0) if match else None
        if kind == "generation":
            if self.task.number_from == "final":
                return final_number(generated)
            match = re.search(NUMBER, first_line)
            return normalise_number(match.group(0)) if match else None
        return match_label(first_line, self.verbalizers)

    def correct(self, item: TaskItem, prediction) -> bool:
        if prediction is None:
            return False
        if self.is_classification:
            return prediction == item.label
        if self.task.task_type == "generation":
            return prediction == normalise_number(item.answer)
        return prediction == item.answer

    def digit_accuracy(self, item: TaskItem, prediction: str | None) -> float:
        """Share of the passkey's digit positions the prediction gets right."""
        guess = (prediction or "").ljust(len(item.answer))[: len(item.answer)]
        return sum(a == b for a, b in zip(item.answer, guess)) / len(item.answer)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", text.lower())).strip(" .:;,'\"")


def match_label(text: str, verbalizers: list[str]) -> int | None:
    """The label a free-form answer names: the longest verbalizer it starts with, else the only one it contains."""
    said = _normalise(text)
    names = [_normalise(v) for v in verbalizers]
    starts = [i for i, n in enumerate(names) if re.match(rf"{re.escape(n)}(\W|$)", said)]
    if starts:
        return max(starts, key=lambda i: len(names[i]))
    inside = [i for i, n in enumerate(names) if re.search(rf"(^|\W){re.escape(n)}($|\W)", said)]
    return inside[0] if len(inside) == 1 else None


def _to_task_item(spec: BridgeSpec, raw: dict) -> TaskItem:
    task = spec.task
    fields = {k: v for k, v in raw.items() if k in ("text", "question", "choices")}
    text = task.input_template.format(**fields)
    if task.task_type == "generation":
        return TaskItem(raw["id"], text, raw["answer"], solution=raw.get("solution"))
    label = int(raw["label"])
    return TaskItem(raw["id"], text, task.verbalizer(task.label_names()[label]), label)


def passkey_items(n: int, digits: int, seed: int, prefix: str, exclude: set[str] = frozenset()) -> list[dict]:
    """Synthetic passkey texts: a code of `digits` digits among filler sentences."""
    rng = random.Random(f"passkey:{prefix}:{seed}")
    items, seen = [], set(exclude)
    while len(items) < n:
        code = "".join(rng.choice("0123456789") for _ in range(digits))
        if code in seen:
            continue
        seen.add(code)
        before, after = rng.sample(PASSKEY_FILLER, 2)
        items.append({"id": f"{prefix}:{len(items)}", "text": f"{before} The passkey is {code}. Remember it. {after}",
                      "answer": code})
    return items


def build_task(spec: BridgeSpec, ctx) -> TaskData:
    task, seed = spec.task, spec.seed
    n_train = task.train_items or spec.training.steps * spec.training.batch_size
    n_demos = spec.evaluation.few_shot
    pool = n_demos + n_train + task.dev_items
    if task.dataset == PASSKEY:
        eval_raw = passkey_items(task.eval_items, task.passkey_digits, seed, "eval")
        train_raw = passkey_items(pool, task.passkey_digits, seed, "train", exclude={r["answer"] for r in eval_raw})
        to_item = lambda r: TaskItem(r["id"], task.input_template.format(text=r["text"]), r["answer"])  # noqa: E731
    else:
        to_item = lambda r: _to_task_item(spec, r)  # noqa: E731
        if task.train_split == task.eval_split:
            total = task.eval_items + pool if ctx.profile == "tiny" else None
            rows = ctx.items(task.dataset, task.eval_split, limit=total, seed=seed)
            order = random.Random(f"carve:{seed}").sample(range(len(rows)), len(rows))
            eval_raw = sorted((rows[i] for i in order[: task.eval_items]), key=lambda r: r["id"])
            train_raw = [rows[i] for i in order[task.eval_items:]]
        else:
            eval_raw = ctx.items(task.dataset, task.eval_split, limit=task.eval_items, seed=seed)
            train_raw = ctx.items(task.dataset, task.train_split, limit=pool if ctx.profile == "tiny" else None,
                                  seed=seed)
        train_raw = random.Random(f"train:{seed}").sample(train_raw, len(train_raw))
    if len(eval_raw) < task.eval_items:
        raise DataError(f"{task.dataset}: only {len(eval_raw)} evaluation items, the spec asks for {task.eval_items}")
    # Small pools (the tiny profile's synthetic data) cap the training items; the development items come after
    # them and are never trained on
    n_train = min(n_train, len(train_raw) - n_demos - task.dev_items)
    if n_train < 1:
        raise DataError(f"{task.dataset}: the training pool has {len(train_raw)} items, too few for {n_demos} "
                        f"demonstrations, {task.dev_items} development items and any training item")
    demos = [to_item(r) for r in train_raw[:n_demos]]
    train = [to_item(r) for r in train_raw[n_demos: n_demos + n_train]]
    dev = [to_item(r) for r in train_raw[n_demos + n_train: n_demos + n_train + task.dev_items]]
    return TaskData(spec, train, [to_item(r) for r in eval_raw], demos, dev)
