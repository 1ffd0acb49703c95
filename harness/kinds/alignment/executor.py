"""Alignment, the run: same-model baselines, then per direction and layer the paired calibration states,
each map's fit and held-out metrics, and the target's generations from the mapped source states; then
the adapters, if any. Every generation is scored here (it needs the models); levels and tables are the
analysis's.

Under `accelerate launch --num_processes N` every process loads both models and computes the calibration
states; generations (baselines, injections, the adapters' per-epoch ones) and every adapter batch are
split over the processes and gathered in order, so the records equal a one-process run's."""

from __future__ import annotations

import random

import torch

from harness.context import RunContext
from harness.kinds.alignment import maps as M
from harness.kinds.alignment.adapters import make_items
from harness.kinds.alignment.inject import continuation_nll, distinct_2, greedy, kl, repetition_rate
from harness.kinds.alignment.reference import reference_nll
from harness.kinds.alignment.states import encode, layer_states, paired_states
from harness.kinds.contract import RunOutput
from harness.sharding import map_sharded
from registry.errors import SpecError
from registry.kinds.alignment import AlignmentSpec, resolve_layer


def calibration_texts(spec: AlignmentSpec, ctx: RunContext) -> tuple[list[str], set[int], list[str]]:
    """The calibration texts (cut to max_chars), the indices of the held-out ones and every text's item id."""
    cal = spec.calibration
    items = ctx.items(cal.dataset, cal.split, limit=cal.texts)
    texts = [item[cal.text_field][: cal.max_chars] for item in items]
    order = list(range(len(texts)))
    random.Random(f"{spec.seed}:heldout").shuffle(order)
    return texts, set(order[: max(1, round(cal.heldout_fraction * len(texts)))]), [item["id"] for item in items]


def unaligned(spec: AlignmentSpec, d_in: int, d_out: int) -> M.StateMap:
    if d_in != d_out and spec.unaligned_map is None:
        raise SpecError(f"the widths differ ({d_in} -> {d_out}), so 'none' needs a declared map: pad_truncate or "
                        "random_semi_orthogonal", field="unaligned_map")
    if spec.unaligned_map in ("pad_truncate", None):  # equal widths: the identity
        return M.pad_truncate(d_in, d_out)
    return M.random_semi_orthogonal(d_in, d_out, spec.seed)


def fit_map(spec: AlignmentSpec, name: str, x: torch.Tensor, y: torch.Tensor, where: str) -> M.StateMap:
    if name == "none":
        return unaligned(spec, x.shape[1], y.shape[1])
    need = max(x.shape[1], y.shape[1])
    if x.shape[0] < need and spec.calibration.rank_deficient == "refuse":
        raise SpecError(f"{where}: {x.shape[0]} fitting pairs are fewer than the width {need}, so the Procrustes fit "
                        f"would be rank-deficient; raise calibration.texts or set calibration.rank_deficient: allow",
                        field="calibration.texts")
    return M.procrustes(x, y)


def score(spec, target, native_prompt: list[int], tokens: list[int], first: torch.Tensor,
          native_first: torch.Tensor) -> dict:
    nll = continuation_nll(target, native_prompt, tokens)
    return {"tokens": tokens, "text": target.tokenizer.decode(tokens), "nll": nll,
            "repetition": repetition_rate(tokens), "distinct_2": distinct_2(tokens),
            "kl_first": kl(native_first, first)}




def run(spec: AlignmentSpec, ctx: RunContext) -> RunOutput:
    with ctx.phase("load_models"):
        lms = {name: ctx.models.get(name, spec.dtype) for name in spec.model_names()}
    for lm in lms.values():
        lm.model.eval()
    records: list[dict] = []
    prompt_ids = {name: [encode(lm, p, spec.add_bos).ids for p in spec.prompts] for name, lm in lms.items()}
    native_first: dict[str, list[torch.Tensor]] = {}
    with ctx.phase("baselines"):
        for name, lm in lms.items():
            def baseline(indices, lm=lm, name=name):
                out = []
                for i in indices:
                    tokens, first = greedy(lm, spec.max_new_tokens, prompt_ids=prompt_ids[name][i])
                    out.append((first, score(spec, lm, prompt_ids[name][i], tokens, first, first)))
                return out

            results = map_sharded(baseline, list(range(len(spec.prompts))), ctx.processes)
            native_first[name] = [first for first, _ in results]
            for i, (prompt, (_, scored)) in enumerate(zip(spec.prompts, results)):
                records.append({"record": "generation", "condition": "baseline", "source": name, "target": name,
                                "map": "baseline", "layer_fraction": None, "source_layer": None, "target_layer": None,
                                "prompt_index": i, "prompt": prompt, **scored})

    texts, heldout, text_ids = calibration_texts(spec, ctx)
    # which dataset rows calibrate the maps and which are held out (a seeded draw), so any statistic can be redone
    records.append({"record": "calibration", "dataset": spec.calibration.dataset, "split": spec.calibration.split,
                    "fit_ids": [i for n, i in enumerate(text_ids) if n not in heldout],
                    "heldout_ids": [i for n, i in enumerate(text_ids) if n in heldout]})
    a_name, b_name = spec.source_model, spec.target_model
    a, b = lms[a_name], lms[b_name]
    fractions = set(spec.layers) | {f for adapter in spec.adapters for f in adapter.layers}
    a_layers = sorted({resolve_layer(f, a.anatomy.n_layers) for f in fractions})
    b_layers = sorted({resolve_layer(f, b.anatomy.n_layers) for f in fractions})
    bar = ctx.progress(total=len(texts), desc="calibration states", unit="text")
    with ctx.phase("calibration_states"):
        xa, xb, owner = paired_states(a, b, texts, a_layers, b_layers, spec.calibration.pairing, spec.add_bos, bar,
                                      spec.calibration.pairs_per_text, spec.seed)
    bar.close()
    is_held = torch.tensor([t in heldout for t in owner])
    states = {a_name: xa, b_name: xb}

    total = len(spec.directions()) * len(spec.layers) * len(spec.maps) * len(spec.prompts)
    bar = ctx.progress(total=total, desc="injection", unit="generation")
    for src_name, tgt_name in spec.directions():
        src, tgt = lms[src_name], lms[tgt_name]
        for fraction in spec.layers:
            ls, lt = resolve_layer(fraction, src.anatomy.n_layers), resolve_layer(fraction, tgt.anatomy.n_layers)
            x, y = states[src_name][ls], states[tgt_name][lt]
            prompt_states = [layer_states(src, ids, [ls])[ls] for ids in prompt_ids[src_name]]
            for map_name in spec.maps:
                where = f"{src_name} layer {ls} -> {tgt_name} layer {lt}"
                with ctx.phase(f"fit.{map_name}"):
                    state_map = fit_map(spec, map_name, x[~is_held], y[~is_held], where)
                    mapped = state_map(x[is_held])
                    records.append({"record": "fit", "source": src_name, "target": tgt_name, "map": map_name,
                                    "layer_fraction": fraction, "source_layer": ls, "target_layer": lt,
                                    "fit_pairs": int((~is_held).sum()), "heldout_pairs": int(is_held.sum()),
                                    **M.alignment_metrics(mapped, x[is_held], y[is_held])})
                with ctx.phase(f"inject.{map_name}"):
                    def inject(indices, tgt=tgt, tgt_name=tgt_name, state_map=state_map, prompt_states=prompt_states,
                               lt=lt):
                        out = []
                        for i in indices:
                            tokens, first = greedy(tgt, spec.max_new_tokens, states=state_map(prompt_states[i]), layer=lt)
                            out.append(score(spec, tgt, prompt_ids[tgt_name][i], tokens, first, native_first[tgt_name][i]))
                            bar.update(1)
                        return out

                    scored = map_sharded(inject, list(range(len(spec.prompts))), ctx.processes)
                    for i, (prompt, result) in enumerate(zip(spec.prompts, scored)):
                        records.append({"record": "generation", "condition": "injected", "source": src_name,
                                        "target": tgt_name, "map": map_name, "layer_fraction": fraction,
                                        "source_layer": ls, "target_layer": lt, "prompt_index": i, "prompt": prompt,
                                        **result})
    bar.close()
    curves = train_adapters(spec, ctx, lms, states, is_held, texts, heldout, prompt_ids, records) if spec.adapters else []
    return RunOutput(records=records, curves=curves)


def train_adapters(spec: AlignmentSpec, ctx: RunContext, lms: dict, states: dict, is_held: torch.Tensor,
                   texts: list[str], heldout: set[int], prompt_ids: dict, records: list[dict]) -> list[dict]:
    from harness.kinds.alignment.training import train

    reference = reference_nll(records)
    fit_texts = [t for i, t in enumerate(texts) if i not in heldout]
    val_texts = [t for i, t in enumerate(texts) if i in heldout]
    curves = []
    for index, config in enumerate(spec.adapters):
        name = f"adapter{index}"
        for src_name, tgt_name in spec.directions():
            src, tgt = lms[src_name], lms[tgt_name]
            ls = [resolve_layer(f, src.anatomy.n_layers) for f in config.layers]
            lt = [resolve_layer(f, tgt.anatomy.n_layers) for f in config.layers]
            with ctx.phase(f"{name}.items"):
                train_items = make_items(src, tgt, fit_texts, ls, lt, config.context_fraction, spec.add_bos)
                val_items = make_items(src, tgt, val_texts, ls, lt, config.context_fraction, spec.add_bos)
                prompt_states = [layer_states(src, ids, ls) for ids in prompt_ids[src_name]]
            fit = ({l: states[src_name][l][~is_held] for l in ls}, {l: states[tgt_name][l][~is_held] for l in lt})
            starts = {a: fit_map(spec, "procrustes", fit[0][a], fit[1][b], f"{name}: {src_name} layer {a} -> {tgt_name} "
                                 f"layer {b}") for a, b in zip(ls, lt)}
            held = ({l: states[src_name][l][is_held] for l in ls}, {l: states[tgt_name][l][is_held] for l in lt})
            for seed in spec.adapter_seeds():
                with ctx.phase(f"{name}.training"):
                    rows = train(name, config, src, tgt, starts, held, train_items, val_items, prompt_states,
                                 prompt_ids[tgt_name], reference[tgt_name], spec, ctx, seed)
                curves += [{**row, "seed": seed} for row in rows]
                epochs = [r for r in rows if r["event"] == "epoch"]
                ctx.state_use[f"{name}.{src_name}_to_{tgt_name}.seed{seed}"] = {
                    "status": "trained", "from_step": 0, "steps": epochs[-1]["steps"] if epochs else 0}
    return curves
