"""The learned-routing stand-in: train a (toy) MoE model's weights, router included, on mirror text.

Causal LM loss plus the model's own router load-balancing loss (transformers adds it when
`output_router_logits` is on), AdamW with linear warmup and cosine decay; the batch at step t depends
only on (seed, t). The trained weights are cached in the run's state folder (keyed by spec, models and
code), so a rerun reuses them and run.json says so.
"""

from __future__ import annotations

import math
import random
import warnings

import torch

from harness.fsutil import atomic_write_with
from registry.kinds.halflife import HalfLifeSpec

def checkpoint_name(seed: int) -> str:
    return f"pretrained.seed{seed}.pt"


def token_blocks(texts: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """The texts joined with EOS, tokenised, cut into (n, seq_len) blocks (the remainder is dropped)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + eos
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"the pretraining text has {len(stream)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def pretrain(spec: HalfLifeSpec, lm, ctx, seed: int) -> tuple[list[dict], dict]:
    """Train `lm.model` in place with training seed `seed` (the batch order); returns the loss curve and how
    the weights came about."""
    cfg = spec.pretrain
    path = ctx.state_dir / checkpoint_name(seed)
    model = lm.model
    if path.is_file():
        try:
            # weights_only: tensors and plain containers, never code (a planted pickle fails here, unexecuted)
            state = torch.load(path, weights_only=True, map_location=lm.device)
            model.load_state_dict(state["model"])
            return state["log"], {"status": "reused", "from_step": cfg.steps, "steps": cfg.steps}
        except Exception as exc:  # a truncated, foreign or unsafe file: train again
            path.unlink(missing_ok=True)
            discarded = f"{path}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            warnings.warn(f"discarded a corrupt pretraining checkpoint and trained again: {discarded}", stacklevel=2)
    else:
        discarded = None
    items = ctx.items(cfg.dataset, cfg.split)
    blocks = token_blocks([item[cfg.text_field] for item in items], lm.tokenizer, cfg.seq_len).to(lm.device)
    for param in model.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg.warmup_steps, cfg.steps))
    model.train()
    log = []
    bar = ctx.progress(total=cfg.steps, desc=f"pretraining (seed {seed})", unit="step")
    for step in range(cfg.steps):
        rng = random.Random(f"{seed}:{step}")
        batch = blocks[[rng.randrange(len(blocks)) for _ in range(cfg.batch_size)]]
        out = model(input_ids=batch, labels=batch, output_router_logits=True)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"{spec.model}: the pretraining loss became {float(out.loss)} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        aux = getattr(out, "aux_loss", None)
        log.append({"run": "pretrain", "step": step + 1, "lr": scheduler.get_last_lr()[0],
                    "total_loss": float(out.loss.detach()),
                    **({"router_aux_loss": float(aux.detach())} if aux is not None else {})})
        bar.update(1)
        bar.set_postfix_str(f"loss {float(out.loss.detach()):.3f}")
    bar.close()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if ctx.processes.is_main:
        atomic_write_with(path, lambda tmp: torch.save({"model": model.state_dict(), "log": log}, tmp))
    status = {"status": "trained", "from_step": 0, "steps": cfg.steps}
    if discarded:
        status["discarded_checkpoint"] = discarded
    return log, status
