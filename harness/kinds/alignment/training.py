"""Adapter training with per-epoch evaluation (validation loss, held-out CKA / cosine / relative MSE, the
prompts' injected generations) and early stopping, as the report asked for.

Under `accelerate launch --num_processes N` every process holds both models and all items; each computes
its shard of every training and validation batch and of the prompts' generations, gradients are averaged
before each optimiser step, so the log equals a one-process run's (see harness.sharding)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from harness.kinds.alignment import adapters as A
from harness.kinds.alignment import maps as M
from harness.kinds.alignment.inject import continuation_nll, greedy
from harness.sharding import Step, average_gradients, map_sharded
from registry.kinds.alignment import Adapter, resolve_layer


def _freeze(lm) -> None:
    for param in lm.model.parameters():
        param.requires_grad_(False)


@torch.no_grad()
def _validation(adapters, pairs, weights, items, tgt, config: Adapter, processes) -> tuple[float, float, float | None]:
    totals, lms, nces = [], [], []
    for batch in A.batches(items, config.batch_size, "validation"):
        step = Step(list(range(len(batch))), processes, empty_shards=True)
        loss, parts = A.batch_loss(adapters, pairs, weights, batch, step, tgt, config)
        totals.append(float(loss))
        lms.append(parts["lm_loss"])
        if parts["infonce_minus_chance"] is not None:
            nces.append(parts["infonce_minus_chance"])
    return float(np.mean(totals)), float(np.mean(lms)), (float(np.mean(nces)) if nces else None)


@torch.no_grad()
def _generations(adapter, ls, lt, src_prompt_states, tgt, tgt_prompts, reference: float, max_new_tokens: int,
                 processes):
    def generate(pairs):
        out = []
        for states, prompt_ids in pairs:
            tokens, _ = greedy(tgt, max_new_tokens, states=adapter(states[ls]), layer=lt)
            out.append((continuation_nll(tgt, prompt_ids, tokens), tgt.tokenizer.decode(tokens)))
        return out

    scored = map_sharded(generate, list(zip(src_prompt_states, tgt_prompts)), processes)
    ratios = [nll - reference for nll, _ in scored if nll is not None]
    return (float(np.mean(ratios)) if ratios else None), [text for _, text in scored]


def train(name: str, config: Adapter, src, tgt, starts: dict, held_states: dict, train_items, val_items,
          prompt_states, tgt_prompts, reference_nll: float, spec, ctx, seed: int) -> list[dict]:
    """Train one adapter set (one adapter per layer of `config.layers`, each starting from the Procrustes fit
    in `starts[source layer]`) from `src` to `tgt` with training seed `seed` (initialisation of what does not
    start from the fit, and batch order); returns curve rows."""
    _freeze(src)
    _freeze(tgt)
    pairs = [(resolve_layer(f, src.anatomy.n_layers), resolve_layer(f, tgt.anatomy.n_layers)) for f in config.layers]
    weights = config.layer_weights or [1.0 / len(pairs)] * len(pairs)
    (xh, yh) = held_states
    adapters = {ls: A.StateAdapter(config, starts[ls], seed + ls) for ls, lt in pairs}
    params = [p for a in adapters.values() for p in a.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    stopper = A.EarlyStop(config.early_stopping.patience, config.early_stopping.min_delta) if config.early_stopping else None
    direction = f"{src.name}_to_{tgt.name}"
    processes = ctx.processes
    rows: list[dict] = []
    step = 0
    per_epoch = math.ceil(len(train_items) / config.batch_size)
    bar = ctx.progress(total=config.epochs * per_epoch, desc=f"{name} {direction} (seed {seed})", unit="batch")

    def evaluate(epoch: int, step: int, train_losses: list[float], seconds: float) -> bool:
        """Validation loss, held-out alignment and the prompts' generations; True when early stopping fires."""
        val_loss, val_lm, val_nce = _validation(adapters, pairs, weights, val_items, tgt, config, processes)
        stop = bool(stopper and stopper(val_loss))  # epoch 0 sets the starting best
        for (ls, lt), fraction in zip(pairs, config.layers):
            with torch.no_grad():
                metrics = M.alignment_metrics(adapters[ls](xh[ls]), xh[ls], yh[lt])
            ratio, texts = _generations(adapters[ls], ls, lt, prompt_states, tgt, tgt_prompts, reference_nll,
                                        spec.max_new_tokens, processes)
            rows.append({"event": "epoch", "adapter": name, "type": config.type, "direction": direction,
                         "layer_fraction": fraction, "source_layer": ls, "target_layer": lt, "epoch": epoch,
                         "steps": step, "batches": len(train_losses), "seconds": round(seconds, 3),
                         "train_loss": float(np.mean(train_losses)) if train_losses else None, "val_loss": val_loss,
                         "val_lm_loss": val_lm, "infonce_minus_chance": val_nce, "cka": metrics["cka_after"],
                         "cosine": metrics["cosine"], "relative_mse": metrics["relative_mse"],
                         "log_ppl_ratio": ratio, "first_output": texts[0] if texts else "", "stopped": int(stop),
                         "trainable_parameters": sum(a.trainable() for a in adapters.values())})
        bar.set_postfix_str(f"val {val_loss:.3f}")
        return stop

    evaluate(0, 0, [], 0.0)  # the starting map (Procrustes or random), before any update
    for epoch in range(1, config.epochs + 1):
        train_losses = []
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for k, batch in enumerate(A.batches(train_items, config.batch_size, f"{seed}:{epoch}"), 1):
            shards = Step(list(range(len(batch))), processes, empty_shards=True)
            loss, parts = A.batch_loss(adapters, pairs, weights, batch, shards, tgt, config)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name} {direction}: the adapter loss became {float(loss)} in epoch {epoch}")
            if loss.requires_grad:  # not on a process whose shard of the batch is empty
                (loss / config.grad_accumulation).backward()
            train_losses.append(float(loss.detach()))
            row = {"event": "batch", "adapter": name, "direction": direction, "epoch": epoch, "batch": k,
                   "loss": train_losses[-1], **parts}
            if k % config.grad_accumulation == 0 or k == per_epoch:
                average_gradients(params, processes)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if config.cka_every and step % config.cka_every == 0:
                    for ls, lt in pairs:
                        with torch.no_grad():
                            row[f"cka.layer{ls}"] = M.linear_cka(adapters[ls](xh[ls]), yh[lt])
            row["steps"] = step
            rows.append(row)
            bar.update(1)
        seconds = time.perf_counter() - started
        stop = evaluate(epoch, step, train_losses, seconds)
        if stop:
            break
    bar.close()
    return rows
