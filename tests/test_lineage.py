"""Seed 002's GSM8K lineage in the bridge kind: spec fields, their wiring, and the lineage metrics and page."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO
from harness.engine import RunSettings
from harness.fsutil import read_jsonl
from harness.kinds.bridge import auxiliary as A
from harness.kinds.bridge import lineage, lineage_page
from harness.kinds.bridge.analysis import METHOD_NAMES, analyze
from harness.kinds.bridge.answers import final_number
from harness.kinds.bridge.modules import LatentBridge, StatisticalNormalizer
from harness.kinds.bridge.training import train
from harness.kinds.contract import Analysis
from harness.workflow import run_and_analyze
from registry import load_spec
from registry.errors import SpecError
from registry.kinds.bridge import BridgeArchSpec, TrainingSpec

LINEAGE = sorted(p for p in (REPO / "specs").glob("*.yaml") if "gsm8k_lineage" in load_spec(p, "paper").tags)


def test_every_version_is_in_the_lineage_and_extends_the_one_before():
    names = [p.stem for p in LINEAGE]
    assert names[:12] == ["gsm8k_v01", "gsm8k_v02", "gsm8k_v03", "gsm8k_v03_1", *[f"gsm8k_v{n:02d}" for n in range(4, 12)]]
    assert {"gsm8k_v12_dit", "gsm8k_v13_dit_xattn", "gsm8k_v14_dit_hybrid", "gsm8k_v15_vq", "gsm8k_v15_fsq8",
            "gsm8k_v15_rms_div", "sst2_vq_signal_check"} <= set(names)
    for path in LINEAGE:
        spec = load_spec(path, "paper")
        assert spec.description.startswith(("V", "Phase")), spec.name  # the page's "what changed" is its first sentence
        assert spec.expected, spec.name


@pytest.mark.parametrize("name, setting", [
    ("gsm8k_v03", lambda s: s.task.train_primer == "Answer: " and s.task.primer.startswith("Analysis of received")),
    ("gsm8k_v04", lambda s: s.task.train_primer is None and s.task.primer == "Answer: "),
    ("gsm8k_v03", lambda s: s.training.losses.anchor.distance == "mse" and s.bridge.output.scaling == "layernorm_tanh"),
    ("gsm8k_v03_1", lambda s: s.training.losses.anchor.distance == "cosine" and s.training.losses.info_nce.weight == 0.1),
    ("gsm8k_v06", lambda s: s.training.losses.anchor.target == "question" and s.bridge.sender_layer == 16),
    ("gsm8k_v07", lambda s: s.training.losses.anchor.target == "answer" and s.bridge.output.scale_init == 0.03),
    ("gsm8k_v09", lambda s: s.training.losses.bag_of_words == 5.0 and s.training.losses.reconstruction_head == 0),
    ("gsm8k_v10", lambda s: s.task.placement == "before_bos" and s.training.losses.anchor is None),
    ("gsm8k_v11", lambda s: s.training.token_weights.first == 10 and s.training.token_weights.weight == 100),
    ("gsm8k_v15_fsq8", lambda s: s.bridge.vq is None and s.bridge.fsq.levels == [8] * 8),
    ("gsm8k_v15_fsq32", lambda s: s.bridge.fsq.levels == [5] * 32),
    ("gsm8k_v15_cont", lambda s: s.bridge.fsq is None and s.bridge.output.scaling == "scale"),
    ("gsm8k_v14_dit_hybrid", lambda s: s.bridge.flow.condition == "hybrid" and s.bridge.flow.width == 1024),
])
def test_each_version_holds_the_reports_settings(name, setting):
    assert setting(load_spec(REPO / "specs" / f"{name}.yaml", "paper"))


@pytest.mark.parametrize("field, value, message", [
    ("bridge.fsq", {"levels": [5, 5]}, "exclude each other"),
    ("task.primer", "Hi", "primer and train_primer must be empty"),
    ("task.target_template", "{question}", "target_template may only use"),
    ("bridge.flow", {"latents": 4}, "takes no vq, fsq"),
    ("bridge.fsq", {"levels": [1, 5]}, "at least 2"),
])
def test_contradictory_settings_are_named(field, value, message):
    base = "gsm8k_v15_vq" if field != "task.primer" else "gsm8k_v10"
    with pytest.raises(SpecError, match=message):
        load_spec(REPO / "specs" / f"{base}.yaml", "paper", overrides=[f"{field}={json.dumps(value)}"])


def test_a_flow_bridge_refuses_the_regression_losses():
    with pytest.raises(SpecError, match="rectified-flow loss alone"):
        load_spec(REPO / "specs" / "gsm8k_v12_dit.yaml", "paper", overrides=["training.diversity_weight=0.1"])


@pytest.mark.parametrize("text, number", [
    ("16 - 3 - 4 = 9 eggs.\n#### 18", "18"), ("so 1,200 then 5", "5"), ("no digits", None), ("#### $2,500.50", "2500.50"),
    ("#### 7.", "7"), ("#### none, but 3 then 4", "3"), ("1 + 2 = 3 ####", "3"),
])
def test_the_final_number_is_after_the_marker_else_the_last_one(text, number):
    assert final_number(text) == number


def test_reconstruction_cosine_pairs_dimensions_by_index_and_cuts_to_the_narrower_width():
    soft = torch.tensor([[[1.0, 0.0, 5.0]]])  # receiver width 3
    source = torch.tensor([[[1.0, 1.0, -7.0, 2.0]]])  # sender width 4: the first 3 dimensions are compared
    expected = 1 - (1 * 1 + 0 * 1 + 5 * -7) / (math.sqrt(26) * math.sqrt(51))
    assert A.reconstruction_cosine(soft, source, None).item() == pytest.approx(expected)


def test_recolouring_gives_the_receivers_statistics():
    torch.manual_seed(0)
    states = torch.randn(500, 4) * 3 + 2
    target_mean, target_std = torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([0.01, 0.02, 0.03, 0.04])
    out = StatisticalNormalizer(states.mean(0), states.std(0), False, (target_mean, target_std))(states)
    assert torch.allclose(out.mean(0), target_mean, atol=1e-5) and torch.allclose(out.std(0), target_std, rtol=1e-4)


def test_a_bridge_recolours_with_scalar_statistics_when_the_widths_differ():
    spec = BridgeArchSpec(soft_tokens=2, normalizer={"recolour": True}, resampler={"dim": 8, "depth": 1, "heads": 2})
    colour = (torch.full((6,), 0.5), torch.arange(1.0, 7.0))  # receiver width 6, sender width 4
    bridge = LatentBridge(spec, 4, 6, torch.zeros(4), torch.ones(4), 1.0, colour)
    assert torch.allclose(bridge.normalizer.target_mean, torch.full((4,), 0.5))
    assert torch.allclose(bridge.normalizer.target_log_std.exp(), torch.full((4,), 3.5))
    with pytest.raises(ValueError, match="recolour needs"):
        LatentBridge(spec, 4, 6, torch.zeros(4), torch.ones(4), 1.0)


@pytest.mark.parametrize("scaling", ["rms", "tanh", "layernorm_tanh", "scale"])
def test_info_nce_of_a_fresh_bridge_is_ln_batch_when_every_item_reads_the_same_states(scaling):
    """Section 6's sanity value: a bridge that sends the same tokens for every item scores exactly ln(batch); with
    distinct inputs a fresh bridge here already scores below it (the page shows both: `info_nce_chance`)."""
    torch.manual_seed(0)
    spec = BridgeArchSpec(soft_tokens=8, resampler={"dim": 32, "depth": 2, "heads": 4}, output={"scaling": scaling})
    states = torch.randn(8, 12, 16)
    bridge = LatentBridge(spec, 16, 24, states.mean((0, 1)), states.std((0, 1)), 0.1)
    mask = torch.ones(8, 12, dtype=torch.bool)
    same, aux = bridge(states[:1].expand(8, -1, -1), mask)
    assert A.info_nce(same).item() == pytest.approx(A.chance_info_nce(8), rel=1e-4)
    assert A.info_nce(bridge(states, mask)[0]).item() < A.chance_info_nce(8)
    assert aux["raw"].shape == (8, 8, 24)


def test_on_nonfinite_loss_stop_ends_training_before_the_bad_update(tmp_path):
    weight = torch.nn.Linear(1, 1)

    def loss(step):
        value = weight.weight.sum() * 0 + (float("nan") if len(calls) == 2 else 1.0)
        calls.append(1)
        return {"total": value}

    for mode in ("stop", "fail"):
        calls = []
        spec = TrainingSpec(steps=5, batch_size=1, warmup_steps=0, on_nonfinite_loss=mode, checkpoint_every=100)
        if mode == "fail":
            with pytest.raises(FloatingPointError, match="at step 3"):
                train(weight, loss, n_items=4, steps=5, spec=spec, lr=0.1, seed=0, checkpoint=tmp_path / "f.pt", label="t")
            continue
        with pytest.warns(UserWarning, match="at step 3"):
            result = train(weight, loss, n_items=4, steps=5, spec=spec, lr=0.1, seed=0, checkpoint=tmp_path / "s.pt",
                           label="t")
        assert result.nonfinite_at == 3 and len(result.log) == 2 and result.status["nonfinite_loss_at_step"] == 3
        assert torch.isfinite(weight.weight).all()


def _records(outputs: list[str], answers: list[str], inputs: list[str], codes=None) -> list[dict]:
    rows = []
    for n, (output, answer, text) in enumerate(zip(outputs, answers, inputs)):
        row = {"seed": 0, "id": f"q{n}", "input": text, "answer": answer, "label": None,
               "bridge": {"generated": output, "generation": final_number(output)}}
        if codes:
            row["bridge"]["codes"] = codes[n]
        rows.append(row)
    return rows


def test_solution_quality_counts_partial_failed_entities_and_diversity_by_hand():
    records = _records(
        ["Janet sells 16 - 3 = 13 eggs. #### 13", "Janet sells 16 - 3 = 13 eggs. #### 13", "garbage", "#### 5"],
        ["13", "7", "2", "9"],
        ["Janet has 16 ducks.", "Tom has 3 cats.", "Ann has 2 dogs.", "Bob sold 4 pies."])
    out = Analysis()
    lineage.solution_quality("generation", records, ["bridge"], out, METHOD_NAMES)
    m = out.metrics
    assert m["bridge.partial_rate"] == 0.5  # item 2 (wrong, solution-shaped) and item 4 ('####')
    assert m["bridge.failed_rate"] == 0.25  # 'garbage'
    # numbers: 16 (found), 3 (not: item 2's output has 3 but item 2's question is about Tom... it has '3' -> found),
    # 2 (not), 4 (not): 2/4; names: Janet (found), Tom, Ann, Bob (not): 1/4; overall 3/8
    assert m["bridge.entity_transfer.numbers"] == 0.5
    assert m["bridge.entity_transfer.names"] == 0.25
    assert m["bridge.entity_transfer.overall"] == 3 / 8
    assert m["bridge.output_diversity"] == 0.75 and "bridge.output_diversity.ci_low" in m


def test_bottleneck_statistics_and_curve_points():
    records = _records(["a", "b"], ["1", "2"], ["q", "r"], codes=[[1, 1, 2], [1, 1, 1]])
    out = Analysis()
    table = lineage.bottleneck(records, out)
    counts = [5 / 6, 1 / 6]
    assert out.metrics["bridge.vq.perplexity"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in counts)))
    assert out.metrics["bridge.vq.codes_used"] == 2 and out.metrics["bridge.vq.code_diversity"] == pytest.approx(2 / 6)
    assert table is not None
    curves = [{"run": "bridge", "seed": 0, "step": s, "lm_loss": 3.0 - s / 10, "scale": 0.1 * s, "info_nce_loss": 2.0}
              for s in range(1, 21)]
    lineage.curve_points(curves, out, {"training.bridge.scale.step_5": 0.1, "training.bridge.scale.step_50": 1.0}, 8)
    assert out.metrics["training.bridge.scale.step_5"] == pytest.approx(0.5)
    assert "training.bridge.scale.step_50" not in out.metrics  # the run never got there
    assert out.metrics["training.bridge.initial_scale"] == pytest.approx(0.1)
    assert out.metrics["training.bridge.final_scale"] == pytest.approx(0.1 * (19 + 20) / 2)
    assert out.metrics["training.bridge.info_nce_chance"] == pytest.approx(math.log(8))
    assert out.series["scale"][0] == (1, pytest.approx(0.1))


def test_finding_facts_name_what_was_measured():
    records = _records(["same same same same same", "same same same same same", "vector talk"], ["1", "2", "3"],
                       ["a", "b", "c"])
    out = Analysis()
    lineage.finding_facts(records, out, {"bridge.finding.identical_outputs": "all identical",
                                         "bridge.finding.meta_commentary": "talks about vectors",
                                         "bridge.finding.degenerate_loops": "loops"})
    assert out.facts["bridge.finding.identical_outputs"].startswith("2/3 distinct outputs; the most common output (2/3")
    assert out.facts["bridge.finding.meta_commentary"] == "1/3 outputs mention 'vector' or 'thought'"
    assert out.facts["bridge.finding.degenerate_loops"] == "2/3 outputs repeat a 1-3 word phrase 4+ times"


def test_the_lineage_page_pairs_adjacent_versions_on_shared_items():
    def entry(name, hits):
        spec = load_spec(REPO / "specs" / f"{name}.yaml", "paper")
        analysis = Analysis(metrics={"bridge.generation.accuracy": sum(hits) / len(hits), "n_items": len(hits)},
                            outcomes={"bridge.generation": {0: {f"q{i}": float(h) for i, h in enumerate(hits)}}})
        return SimpleNamespace(spec=spec, analysis=analysis, run={"profile": "local"})

    pages = lineage_page.pages([entry("gsm8k_v02", [True] * 2 + [False] * 8), entry("gsm8k_v01", [False] * 10)],
                               REPO / "nonexistent")
    (name, title, tables, notes, figures), = pages
    rows = tables[0].rows
    assert name == "gsm8k_lineage" and [r[0] for r in rows] == ["gsm8k_v01", "gsm8k_v02"]
    assert rows[0][-1] is None and rows[1][-1] == "+20.0 pts, p 0.5 (n 10)"  # McNemar exact: 2 gained, 0 lost
    assert "(0.0%, §5)" in rows[0][4]  # V1's reported accuracy beside the reproduced one
    assert not any(n.startswith("Not run") for n in notes)  # the not-run note only when a version has no run
    unrun = SimpleNamespace(spec=load_spec(REPO / "specs" / "gsm8k_v03.yaml", "paper"), analysis=None, run=None)
    (_, _, tables, notes, _), = lineage_page.pages([entry("gsm8k_v01", [False] * 10), unrun], REPO / "nonexistent")
    assert tables[0].rows[1][2] == "no run yet" and any(n.startswith("Not run") for n in notes)


@pytest.mark.slow
def test_a_lineage_version_logs_its_losses_and_diagnostics_in_the_tiny_profile(tmp_path):
    settings = RunSettings(profile="tiny", results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu",
                           show_progress=False)
    run_dir = run_and_analyze(REPO / "specs" / "gsm8k_v09.yaml", settings).run_dir
    curves = (run_dir / "curves.csv").read_text().splitlines()[0].split(",")
    assert {"lm_loss", "info_nce_loss", "anchor_loss", "bow_loss", "scale", "z_variance", "tanh_saturation"} <= set(curves)
    records = read_jsonl(run_dir / "records.jsonl")
    assert {"soft_token_min", "soft_token_std"} <= set(records[0]["bridge"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "bridge.entity_transfer.overall" in metrics and "training.bridge.final_anchor_loss" in metrics
    assert analyze(load_spec(REPO / "specs" / "gsm8k_v09.yaml", "tiny"), records).metrics["n_items"] == len(records)


def _version(name: str, outcomes: dict | None = None, seeds: dict | None = None, series: dict | None = None):
    """A lineage version's report entry: per-item outcomes (name -> list per seed) and per-seed metrics."""
    analysis = Analysis(metrics={"n_items": 100.0}, series=series or {},
                        outcomes={k: {s: {f"q{i}": float(v) for i, v in enumerate(values)} for s, values in per_seed.items()}
                                  for k, per_seed in (outcomes or {}).items()},
                        seed_metrics=seeds or {0: {}})
    return SimpleNamespace(spec=load_spec(REPO / "specs" / f"{name}.yaml", "paper"), analysis=analysis,
                           run={"profile": "local"})


def test_finding_verdicts_come_from_the_engine_over_every_seed():
    from harness import claims as C

    collapsed = {"bridge.unique_output": {s: [1] * 5 + [0] * 95 for s in range(3)},
                 "bridge.entity_transfer": {s: [0.0] * 100 for s in range(3)}}
    diverse = {**collapsed, "bridge.unique_output": {s: [1] * 65 + [0] * 35 for s in range(3)}}
    meta = lambda k: {"bridge.meta_commentary": {s: [1] * k + [0] * (100 - k) for s in range(3)}}  # noqa: E731
    entries = {"gsm8k_v01": _version("gsm8k_v01", collapsed), "gsm8k_v10": _version("gsm8k_v10", diverse),
               "gsm8k_v03_1": _version("gsm8k_v03_1", meta(40)), "gsm8k_v04": _version("gsm8k_v04", meta(5)),
               "gsm8k_v15_vq": _version("gsm8k_v15_vq", seeds={s: {"training.bridge.initial_vq_loss": 0.4} for s in range(3)})}
    table = lineage_page.findings_table(entries)
    found = {f.statement.split(":")[0].split(" ")[0] + f.statement[:30]: f for f in table.findings}

    def verdict(start: str) -> str:
        return next(f.verdict for f in table.findings if f.statement.startswith(start))

    assert all(f.from_engine for f in table.findings) and found
    assert verdict("Posterior collapse") == C.REPRODUCED  # 5% distinct, no entity transfer, every seed
    # 65% distinct, every seed agreeing on each item: exact binomial over items, significantly above the 50% threshold
    assert verdict("The auto-encoder") == C.REVERSED
    assert verdict("The train/eval primer mismatch") == C.REPRODUCED  # 40/100 against 5/100 on the same items
    assert verdict("VQ with a tiny codebook init") == C.NOT_REPRODUCED  # no NaN step in any of the three runs
    assert verdict("Entity scrambling") == C.NOT_RUN


def test_the_no_gradient_finding_is_a_design_consequence_with_what_was_measured():
    from harness import claims as C

    def entry(name, losses, total):
        return _version(name, {"bridge.generation": {0: [1, 0]}}, {0: {"training.bridge.final_total_loss": total}},
                        {"lm_loss": list(enumerate(losses, 1))})

    entries = {"gsm8k_v15_fsq_div": entry("gsm8k_v15_fsq_div", [2.5, 2.25, 2.0], 3.0),
               "gsm8k_v15_fsq32": entry("gsm8k_v15_fsq32", [2.5, 2.25, 2.0], 2.0)}
    finding = next(f for f in lineage_page.findings_table(entries).findings if f.statement.startswith("The unique-code"))
    assert finding.verdict == C.DESIGN
    assert "equal at 3/3 steps" in finding.statistic and "3 vs 2" in finding.statistic and "2/2 item" in finding.statistic
