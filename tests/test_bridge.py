"""The latent bridge: spec checks before loading, modules, the receiver loss, and tiny end-to-end runs."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO
from harness import stats
from harness.engine import RunSettings
from harness.fsutil import read_csv_rows, read_jsonl
from harness.kinds.bridge.answers import judge
from harness.kinds.bridge.modules import LatentBridge, StatisticalNormalizer, batch_diversity_loss
from harness.kinds.bridge.task import match_label, passkey_items
from harness.kinds.bridge.training import batch_indices, warmup_cosine
from harness.workflow import run_and_analyze as run_spec
from registry import SpecError, load_spec
from registry.kinds.bridge import BridgeArchSpec

SST2 = REPO / "specs" / "sst2_8tok.yaml"


# ------------------------------------------------------------------ spec checks, before any model loads
def _error(path, profile="tiny", overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(path, profile, overrides)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("override, expected", [
    ("task.dataset=bankin77", "task.dataset: unknown dataset 'bankin77'; did you mean 'banking77'?"),
    ("task.verbalizers={positiv: good}", "verbalizers name 'positiv', which is not in the label list of sst2"),
    ("task.label_column=fine_label", "unknown label column 'fine_label' for sst2 (known: label)"),
    ("bridge.soft_tokens=0", "bridge.soft_tokens: Input should be greater than or equal to 1"),
    ("bridge.sender_layer=9", "bridge.sender_layer 9 is out of range for llama31_8b_instruct (4 layers under the tiny "
                              "profile; valid: -4..3)"),
    ("bridge.receiver_hidden_size=4096", "bridge.receiver_hidden_size is 4096, but mistral7b_v03_instruct has hidden "
                                         "size 96 under the tiny profile"),
    ("task.sender_template='{input} {label}'", "sender_template may only use {input}, not ['label']"),
    ("task.eval_split=dev", "sst2 has no split 'dev' (it has: train, validation)"),
    ("bridge.resampler.heads=5", "dim (32) must be divisible by heads (5)"),
])
def test_bad_bridge_specs_fail_in_one_line_before_loading(override, expected):
    message = _error(SST2, overrides=(override,))
    assert message.startswith(str(SST2) + ": ") and expected in message


def test_layer_and_width_checks_follow_the_profile():
    assert load_spec(SST2, "local").bridge.sender_hidden_size == 640
    assert "out of range for gemma3_270m (18 layers under the local profile" in _error(
        SST2, "local", ("bridge.sender_layer=18",))


def test_multiple_choice_needs_verbalizers():
    assert "a multiple-choice task needs verbalizers" in _error(REPO / "specs" / "piqa.yaml",
                                                                overrides=("task.verbalizers={}",))


# ------------------------------------------------------------------ units
def test_match_label_prefers_the_longest_leading_label():
    labels = ["top up", "top up failed", "card arrival", "refund not showing up"]
    assert match_label(" Top_up failed, sorry", labels) == 1
    assert match_label("top up", labels) == 0
    assert match_label("I think card arrival.", labels) == 2
    assert match_label("card arrival or top up", labels) == 2  # leads with a label
    assert match_label("maybe top up or card arrival", labels) is None  # two labels inside: ambiguous
    assert match_label("numumumum", ["number", "location"]) is None


def test_judging_predictions_from_records():
    assert judge("classification", {"label": 3}, 3) and not judge("classification", {"label": 3}, None)
    assert judge("generation", {"answer": "1,080"}, "1080")
    assert judge("passkey", {"answer": "04213"}, "04213") and not judge("passkey", {"answer": "04213"}, "4213")


def test_passkeys_are_unique_and_avoid_excluded_codes():
    eval_items = passkey_items(50, 5, 0, "eval")
    train = passkey_items(200, 5, 0, "train", exclude={r["answer"] for r in eval_items})
    codes = [r["answer"] for r in train]
    assert len(set(codes)) == 200 and not set(codes) & {r["answer"] for r in eval_items}
    assert all(len(c) == 5 and c.isdigit() and f"The passkey is {c}." in r["text"] for c, r in zip(codes, train))
    assert passkey_items(5, 5, 0, "eval") == eval_items[:5]


def test_batches_cover_every_item_once_per_epoch_and_are_reproducible():
    seen = [i for step in range(5) for i in batch_indices(step, 4, 20, seed=3)]
    assert sorted(seen) == list(range(20))
    assert batch_indices(7, 4, 20, 3) == batch_indices(7, 4, 20, 3) != batch_indices(7, 4, 20, 4)
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1) and warmup_cosine(100, 10, 100) == pytest.approx(0.0)


def test_batch_diversity_loss_is_the_mean_off_diagonal_cosine():
    same = torch.ones(3, 2, 4)
    assert float(batch_diversity_loss(same)) == pytest.approx(1.0)
    orthogonal = torch.eye(4).reshape(4, 1, 4)
    assert float(batch_diversity_loss(orthogonal)) == pytest.approx(0.0)
    pair = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert float(batch_diversity_loss(pair)) == pytest.approx(1 / math.sqrt(2))


def test_normalizer_whitens_the_calibration_statistics():
    x = torch.randn(500, 6) * torch.tensor([1, 10, 0.1, 5, 2, 3]) + 7
    norm = StatisticalNormalizer(x.mean(0), x.std(0), learnable=True)
    z = norm(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(6), atol=1e-3, rtol=0)
    assert {n for n, _ in norm.named_parameters()} == {"mean", "log_std"}


@pytest.mark.parametrize("scaling", ["rms", "tanh"])
def test_bridge_output_has_the_receiver_scale_and_ignores_padding(scaling):
    spec = BridgeArchSpec(soft_tokens=4, resampler={"dim": 16, "heads": 2, "depth": 1}, output={"scaling": scaling})
    torch.manual_seed(0)
    bridge = LatentBridge(spec, 6, 10, torch.zeros(6), torch.ones(6), receiver_rms=0.03)
    states = torch.randn(1, 5, 6)
    soft, _ = bridge(states, torch.ones(1, 5, dtype=torch.bool))
    padded = torch.cat([states, torch.randn(1, 3, 6) * 100], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(bridge(padded, mask)[0], soft, atol=1e-5, rtol=1e-5)
    if scaling == "rms":
        torch.testing.assert_close(soft.pow(2).mean(-1).sqrt(), torch.full((1, 4), 0.03), atol=1e-6, rtol=0)
    else:
        assert float(soft.detach().abs().max()) <= 0.03


# ------------------------------------------------------------------ the receiver path against a naive computation
def test_sliced_logits_after_a_cached_primer_equal_the_full_forward_loss(tmp_path):
    from harness.kinds.bridge.receiver import ReceiverPrompt
    from harness.kinds.bridge.task import TaskData, TaskItem
    from harness.models import load_model
    from harness.models import lm as L

    spec = load_spec(SST2, "tiny")
    receiver = load_model("mistral7b_v03_instruct", "tiny", cache_dir=tmp_path, device=torch.device("cpu"))
    task = TaskData(spec, [], [TaskItem("a", "x", "positive", 1)], [])
    rp = ReceiverPrompt.build(receiver, task, spec.task.primer)
    torch.manual_seed(1)
    soft = [torch.randn(3, 96) * 0.05, torch.randn(3, 96) * 0.05]
    prompt = rp.text_middle(spec.task.prompt)
    answers = [rp.answer_ids(" positive\n"), rp.answer_ids(" no\n")]
    ours = rp.answer_loss([rp.soft_middle(s, prompt) for s in soft], answers)
    # naive: the whole sequence every time, full logits, labels masked outside the answer
    primer = L.embed(receiver, torch.tensor(L.tokenize(receiver, spec.task.primer, bos=True)))
    losses, count = 0.0, 0
    for s, a in zip(soft, answers):
        seq = torch.cat([primer, s, prompt, L.embed(receiver, torch.tensor(a))])[None]
        logits = receiver.model(inputs_embeds=seq).logits[0].float()
        start = seq.shape[1] - len(a)
        losses += torch.nn.functional.cross_entropy(logits[start - 1:-1], torch.tensor(a), reduction="sum")
        count += len(a)
    torch.testing.assert_close(ours, losses / count, atol=1e-5, rtol=1e-5)


def test_sender_states_stop_at_the_layer_and_come_back_from_the_cache(tmp_path):
    from harness.kinds.bridge.sender_states import sender_states
    from harness.models import ActivationCapture, load_model

    sender = load_model("llama31_8b_instruct", "tiny", cache_dir=tmp_path, device=torch.device("cpu"))
    texts = ["a much longer first text here", "short", "mid sized text"]
    states = sender_states(sender, texts, 1, tmp_path, batch_size=2)
    again = sender_states(sender, texts, 1, tmp_path, batch_size=2)
    assert len(list((tmp_path / "sender_states").glob("*.safetensors"))) == 1
    for text, s, t in zip(texts, states, again):
        torch.testing.assert_close(s, t)
        ids = sender.tokenizer(text, return_tensors="pt")
        with torch.no_grad(), ActivationCapture("s", sender.anatomy, residual=True) as cap:
            sender.model(**ids)
        torch.testing.assert_close(s, cap.get("block.1")[0, 1:], atol=1e-5, rtol=1e-5)  # BOS dropped


# ------------------------------------------------------------------ end to end (tiny profile)
def _run(results, cache, overrides=()):
    settings = RunSettings(profile="tiny", results_dir=results, cache_dir=cache, device="cpu", show_progress=False,
                           overrides=tuple(overrides))
    return run_spec(SST2, settings).run_dir


@pytest.fixture(scope="module")
def tiny_sst2(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("cache"))


def test_every_method_is_evaluated_on_the_same_items(tiny_sst2):
    records = read_jsonl(tiny_sst2 / "records.jsonl")
    spec = load_spec(SST2, "tiny")
    assert len(records) == spec.task.eval_items
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        for method in spec.evaluation.methods:
            assert "generation" in r[method] and "generated" in r[method]
            assert r[method]["scored"] in (0, 1)
    assert all("summary" in r["text_relay"] for r in records)


def test_metrics_are_recomputed_from_the_records(tiny_sst2):
    records = read_jsonl(tiny_sst2 / "records.jsonl")
    metrics = json.loads((tiny_sst2 / "metrics.json").read_text())
    for method in ("bridge", "receiver_text", "text_relay", "prompt_tuning"):
        gen = [r[method]["generation"] == r["label"] for r in records]
        scored = [r[method]["scored"] == r["label"] for r in records]
        assert metrics[f"{method}.generation.accuracy"] == pytest.approx(sum(gen) / len(gen))
        assert metrics[f"{method}.scored.accuracy"] == pytest.approx(sum(scored) / len(scored))
        assert (metrics[f"{method}.scored.ci_low"], metrics[f"{method}.scored.ci_high"]) == pytest.approx(
            stats.wilson_interval(sum(scored), len(scored)))
        invalid = sum(r[method]["generation"] is None for r in records) / len(records)
        assert metrics[f"{method}.generation.invalid_rate"] == pytest.approx(invalid)
    bridge = [r["bridge"]["scored"] == r["label"] for r in records]
    relay = [r["text_relay"]["scored"] == r["label"] for r in records]
    test = stats.mcnemar_test(bridge, relay)  # one seed: the paired test is McNemar's exact test
    assert metrics["paired.text_relay.scored.pvalue"] == pytest.approx(test.pvalue)
    assert metrics["paired.text_relay.scored.seed_0.pvalue"] == pytest.approx(test.pvalue)
    assert metrics["paired.text_relay.scored.difference"] == pytest.approx((sum(bridge) - sum(relay)) / len(bridge))


def test_training_lowers_the_loss_and_logs_each_loss(tiny_sst2):
    from harness.fsutil import read_csv_rows

    rows = [r for r in read_csv_rows(tiny_sst2 / "curves.csv") if r["run"] == "bridge"]
    assert {"lm_loss", "diversity_loss", "total_loss", "lr", "grad_norm"} <= set(rows[0])
    first, last = [r["lm_loss"] for r in rows[:3]], [r["lm_loss"] for r in rows[-3:]]
    assert sum(last) / 3 < sum(first) / 3 - 0.2
    assert any("quick_eval_accuracy" in r for r in rows)


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, tiny_sst2):
    import harness.kinds.bridge.latent_bridge as latent

    calls = {"n": 0}
    original = latent.batch_diversity_loss

    def interrupt_at_step_7(soft):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated interruption")
        return original(soft)

    monkeypatch.setattr(latent, "batch_diversity_loss", interrupt_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "results", tmp_path / "cache")
    assert not (tmp_path / "results" / "sst2_8tok").exists(), "nothing half-written"
    checkpoints = list((tmp_path / "cache" / "state").glob("sst2_8tok-*/bridge.seed*.pt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0], weights_only=True)["step"] == 4
    monkeypatch.setattr(latent, "batch_diversity_loss", original)
    resumed = _run(tmp_path / "results", tmp_path / "cache")
    assert (resumed / "metrics.json").read_text() == (tiny_sst2 / "metrics.json").read_text()
    assert (resumed / "records.jsonl").read_text() == (tiny_sst2 / "records.jsonl").read_text()


@pytest.mark.slow
def test_training_seeds_are_an_axis_and_the_first_seed_is_the_one_seed_run(tmp_path, tiny_sst2):
    run_dir = _run(tmp_path / "results", tmp_path / "cache", ["training.seeds=[0,5]"])
    records = read_jsonl(run_dir / "records.jsonl")
    spec = load_spec(SST2, "tiny")
    first = [r for r in records if r["seed"] == 0]
    other = [r for r in records if r["seed"] == 5]
    assert len(first) == len(other) == spec.task.eval_items
    assert all(set(r) >= set(spec.evaluation.methods) for r in first)
    assert all(not set(r) & {"receiver_text", "sender_text", "text_relay", "random"} for r in other)  # run once
    # seed 0 is exactly the one-seed run: same items, same trained methods
    single = read_jsonl(tiny_sst2 / "records.jsonl")
    assert first == single
    metrics = json.loads((run_dir / "metrics.json").read_text())
    single_metrics = json.loads((tiny_sst2 / "metrics.json").read_text())
    for key in ("receiver_text.generation.accuracy", "text_relay.scored.accuracy", "random.generation.accuracy"):
        assert metrics[key] == pytest.approx(single_metrics[key])  # deterministic methods: once, the same
    # seeded methods lead with the mean over seeds, every seed beside it, and a t interval across seeds
    accs = [sum(r["bridge"]["scored"] == r["label"] for r in rows) / len(rows) for rows in (first, other)]
    assert metrics["bridge.scored.accuracy.seed_0"] == pytest.approx(accs[0])
    assert metrics["bridge.scored.accuracy.seed_5"] == pytest.approx(accs[1])
    assert metrics["bridge.scored.accuracy"] == pytest.approx(sum(accs) / 2)
    assert metrics["bridge.scored.accuracy.seed_0"] == pytest.approx(single_metrics["bridge.scored.accuracy"])
    low, high = stats.mean_interval(accs)
    assert metrics["bridge.scored.ci_low"] == pytest.approx(max(low, 0.0) if accs[0] != accs[1] else accs[0])
    assert metrics["bridge.scored.ci_high"] == pytest.approx(min(high, 1.0) if accs[0] != accs[1] else accs[0])
    curves_seeds = {r["seed"] for r in read_csv_rows(run_dir / "curves.csv") if r["run"] == "bridge"}
    assert curves_seeds == {0, 5}


def _claim_data(outcomes: dict, seed_metrics: dict | None = None, spec=None):
    """The bridge claims' data from per-method outcome lists (one per seed), as the analysis gives them."""

    from harness.kinds.bridge import claims as B
    from harness.kinds.contract import Analysis

    analysis = Analysis(seed_metrics=seed_metrics or {})
    for method, per_seed in outcomes.items():
        for kind in ("generation", "valid"):
            analysis.outcomes[f"{method}.{kind}"] = {
                seed: {f"i{n}": (float(hit) if kind == "generation" else True) for n, hit in enumerate(hits)}
                for seed, hits in per_seed.items()}
        analysis.metrics[f"{method}.generation.accuracy"] = float(np.mean([np.mean(h) for h in per_seed.values()]))
    spec = spec or load_spec(SST2, "local")
    return B.ClaimData(spec, analysis)


def test_the_reports_claims_are_decided_by_the_engine():
    from harness import claims as C
    from harness.kinds.bridge import claims as B
    from registry.common import ClaimRef

    def decide(claim_id: str, data, **reported):
        ref = ClaimRef(id=claim_id, section="86", reported=reported)
        return C.decide(C.Claim(claim_id, B.CATALOGUE[claim_id].statement, "86", "002", "",
                                B.CATALOGUE[claim_id].evidence(ref, data)))

    n = 200
    hits = lambda k: [1] * k + [0] * (n - k)  # noqa: E731
    shifted = [0] * 20 + [1] * 170 + [0] * 10  # the sender text right on 10 items the bridge misses
    data = _claim_data({"bridge": {0: hits(180), 1: hits(176), 2: hits(178)}, "text_relay": {0: hits(130)},
                        "receiver_text": {0: hits(150)}, "sender_text": {0: shifted}, "random": {0: hits(100)}})
    relay = decide("bridge_above_text_relay", data, n=200, bridge=0.947, text_relay=0.71, receiver_text=0.935,
                   chance=0.5)
    assert relay.verdict == C.REPRODUCED and relay.self_check == C.SUPPORTED and "3 seed(s)" in relay.statistic
    # beats both texts: against the sender text the bridge gains 20 items and loses 10: not significant
    both = decide("bridge_above_both_texts", data)
    assert both.verdict in (C.NOT_DETECTED, C.UNDERPOWERED)
    # a reference that cannot beat the random baseline on the same items makes the comparison untestable: the
    # receiver reading the text (the relay passes through it), and the relay itself
    weak = _claim_data({"bridge": {0: hits(180)}, "text_relay": {0: hits(130)}, "receiver_text": {0: hits(105)},
                        "random": {0: hits(100)}})
    assert decide("bridge_above_text_relay", weak).verdict == C.UNTESTABLE
    weak_relay = _claim_data({"bridge": {0: hits(180)}, "text_relay": {0: hits(104)}, "receiver_text": {0: hits(150)},
                              "random": {0: hits(100)}})
    finding = decide("bridge_above_text_relay", weak_relay)
    assert finding.verdict == C.UNTESTABLE and finding.statistic.startswith("text relay 52.0%")
    # prompt tuning at another budget than the bridge's: untestable, with both budgets named
    unequal = _claim_data({"bridge": {0: hits(180)}, "prompt_tuning": {0: hits(140)}, "random": {0: hits(100)}},
                          spec=load_spec(SST2, "local", ["evaluation.prompt_tuning.steps=100"]))
    finding = decide("bridge_above_prompt_tuning", unequal)
    assert finding.verdict == C.UNTESTABLE and "unequal training budgets" in finding.statistic
    equal = _claim_data({"bridge": {0: hits(180)}, "prompt_tuning": {0: hits(140)}, "random": {0: hits(100)}})
    assert decide("bridge_above_prompt_tuning", equal).verdict == C.REPRODUCED
    # falling below the better text: the better one is picked over all seeds
    below = _claim_data({"bridge": {0: hits(20)}, "sender_text": {0: hits(60)}, "receiver_text": {0: hits(90)},
                         "random": {0: hits(2)}}, spec=load_spec(REPO / "specs" / "gsm8k_latent_cot.yaml", "local"))
    finding = decide("bridge_below_better_text", below)
    assert finding.verdict == C.REPRODUCED and "receiver text" in finding.statistic


def test_an_unknown_claim_is_one_line_naming_the_spec():
    from harness import claims as C
    from harness.kinds.bridge import claims as B
    from registry.common import ClaimRef
    from registry.errors import SpecError

    spec = load_spec(SST2, "local").model_copy(update={"claims": [ClaimRef(id="bridge_flies", section="1")]})
    with pytest.raises(SpecError, match=r"sst2_8tok: claims.0.id: unknown claim 'bridge_flies'"):
        C.findings_for(spec, B.CATALOGUE, None)


def test_open_answers_report_how_many_distinct_answers_each_method_gives():
    from harness.kinds.bridge.analysis import _prediction_diversity
    from harness.kinds.contract import Analysis

    records = [{"answer": str(i), "bridge": {"generation": "10" if i < 3 else "12"},
                "sender_text": {"generation": str(i) if i else None}} for i in range(5)]
    out = Analysis()
    table = _prediction_diversity(records, ["bridge", "sender_text"], out)
    assert [row[:2] for row in table.rows] == [["Gold answers", 5], ["Bridge", 2], ["Sender text (0-shot)", 4]]
    assert out.metrics["bridge.top_answer_share"] == 0.6 and out.metrics["gold.distinct_answers"] == 5
    assert out.facts["bridge.prediction_collapse"] == "2 distinct answers on 5 items; most common: 10 (3), 12 (2)"


def test_a_collapse_claim_compares_distinct_answers_with_the_gold_answers_in_every_run():
    from harness import claims as C
    from harness.kinds.bridge import claims as B
    from harness.kinds.bridge.analysis import _prediction_diversity
    from harness.kinds.contract import Analysis
    from registry.common import ClaimRef

    def run(answers):  # one training seed's analysis: 40 distinct gold answers, collapsed below 4
        records = [{"answer": str(i), "bridge": {"generation": answers[i % len(answers)]}} for i in range(40)]
        out = Analysis()
        _prediction_diversity(records, ["bridge"], out)
        return out.metrics

    spec = load_spec(REPO / "specs" / "gsm8k_latent_cot.yaml", "local")
    ref = ClaimRef(id="answers_collapse", section="60")
    for runs, verdict in (([["10", "12"], ["10"]], C.REPRODUCED), ([["10", "12"], [str(i) for i in range(8)]], C.MIXED),
                          ([[str(i) for i in range(8)]], C.UNDERPOWERED),  # one run cannot show its absence
                          ([[str(i) for i in range(8)]] * 3, C.NOT_REPRODUCED)):
        data = B.ClaimData(spec, Analysis(seed_metrics={s: run(a) for s, a in enumerate(runs)}))
        finding = C.decide(C.Claim("answers_collapse", "", "60", "002", "", B.CATALOGUE["answers_collapse"].evidence(ref, data)))
        assert finding.verdict == verdict and "this project's" in finding.seeds
