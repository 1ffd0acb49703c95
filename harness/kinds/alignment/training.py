"""Adapter training with per-epoch evaluation (validation loss, held-out CKA / cosine / relative MSE, the
prompts' injected generations) and early stopping, as the report asked for."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from harness.kinds.alignment import adapters as A
from harness.kinds.alignment import maps as M
from harness.kinds.alignment.inject import continuation_nll, greedy
from registry.kinds.alignment import Adapter, resolve_layer


def _freeze(lm) -> None:
    for param in lm.model.parameters():
        param.requires_grad_(False)


@torch.no_grad()
def _validation(adapters, pairs, weights, items, tgt, config: Adapter) -> tuple[float, float, float | None]:
    totals, lms, nces = [], [], []
    for batch in A.batches(items, config.batch_size, "validation"):
        loss, parts = A.batch_loss(adapters, pairs, weights, batch, tgt, config)
        totals.append(float(loss))
        lms.append(parts["lm_loss"])
        if parts["infonce_minus_chance"] is not None:
            nces.append(parts["infonce_minus_chance"])
    return float(np.mean(totals)), float(np.mean(lms)), (float(np.mean(nces)) if nces else None)


@torch.no_grad()
def _generations(adapter, ls, lt, src_prompt_states, tgt, tgt_prompts, reference: float, max_new_tokens: int):
    ratios, texts = [], []
    for states, prompt_ids in zip(src_prompt_states, tgt_prompts):
        tokens, _ = greedy(tgt, max_new_tokens, states=adapter(states[ls]), layer=lt)
        nll = continuation_nll(tgt, prompt_ids, tokens)
        if nll is not None:
            ratios.append(nll - reference)
        texts.append(tgt.tokenizer.decode(tokens))
    return (float(np.mean(ratios)) if ratios else None), texts


def train(name: str, config: Adapter, src, tgt, starts: dict, held_states: dict, train_items, val_items,
          prompt_states, tgt_prompts, reference_nll: float, spec, ctx) -> list[dict]:
    """Train one adapter set (one adapter per layer of `config.layers`, each starting from the Procrustes fit
    in `starts[source layer]`) from `src` to `tgt`; returns curve rows."""
    _freeze(src)
    _freeze(tgt)
    pairs = [(resolve_layer(f, src.anatomy.n_layers), resolve_layer(f, tgt.anatomy.n_layers)) for f in config.layers]
    weights = config.layer_weights or [1.0 / len(pairs)] * len(pairs)
    (xh, yh) = held_states
    adapters = {ls: A.StateAdapter(config, starts[ls], spec.seed + ls) for ls, lt in pairs}
    params = [p for a in adapters.values() for p in a.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    stopper = A.EarlyStop(config.early_stopping.patience, config.early_stopping.min_delta) if config.early_stopping else None
    direction = f"{src.name}_to_{tgt.name}"
    rows: list[dict] = []
    step = 0
    per_epoch = math.ceil(len(train_items) / config.batch_size)
    bar = ctx.progress(total=config.epochs * per_epoch, desc=f"{name} {direction}", unit="batch")

    def evaluate(epoch: int, step: int, train_losses: list[float], seconds: float) -> bool:
        """Validation loss, held-out alignment and the prompts' generations; True when early stopping fires."""
        val_loss, val_lm, val_nce = _validation(adapters, pairs, weights, val_items, tgt, config)
        stop = bool(stopper and stopper(val_loss))  # epoch 0 sets the starting best
        for (ls, lt), fraction in zip(pairs, config.layers):
            with torch.no_grad():
                metrics = M.alignment_metrics(adapters[ls](xh[ls]), xh[ls], yh[lt])
            ratio, texts = _generations(adapters[ls], ls, lt, prompt_states, tgt, tgt_prompts, reference_nll,
                                        spec.max_new_tokens)
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
        for k, batch in enumerate(A.batches(train_items, config.batch_size, f"{spec.seed}:{epoch}"), 1):
            loss, parts = A.batch_loss(adapters, pairs, weights, batch, tgt, config)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name} {direction}: the adapter loss became {float(loss)} in epoch {epoch}")
            (loss / config.grad_accumulation).backward()
            train_losses.append(float(loss.detach()))
            row = {"event": "batch", "adapter": name, "direction": direction, "epoch": epoch, "batch": k,
                   "loss": train_losses[-1], **parts}
            if k % config.grad_accumulation == 0 or k == per_epoch:
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
