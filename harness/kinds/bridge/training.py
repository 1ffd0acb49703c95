"""Training loop for the bridge and for prompt tuning: deterministic, checkpointed, resumable.

The batch at step t depends only on (seed, t) and nothing else is random, so a run that is
interrupted and resumed from its last checkpoint ends with the same weights as one that never
stopped (tests check this). Losses are logged separately every step. `accelerate` runs the
step: bf16 mixed precision on a CUDA device, plain fp32 on the CPU. Under `accelerate launch`
with N processes each process computes its shard of every global batch and gradients are
averaged before clipping (`harness.sharding`), so N processes train like one; only the main
process writes checkpoints.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from torch import nn

from harness.context import Processes
from harness.fsutil import atomic_write_with
from harness.sharding import Step, average_gradients
from registry.kinds.bridge import TrainingSpec


def batch_indices(step: int, batch_size: int, n_items: int, seed: int) -> list[int]:
    """Items of step `step`: consecutive slices of per-epoch seeded permutations."""
    out = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, n_items)
        order = random.Random(f"{seed}:{epoch}").sample(range(n_items), n_items)
        take = min(batch_size - len(out), n_items - offset)
        out.extend(order[offset:offset + take])
        position += take
    return out


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainResult:
    log: list[dict]
    resumed_from: int
    seconds: float
    steps: int
    discarded: str | None = None  # why a cached checkpoint was thrown away, if one was
    nonfinite_at: int | None = None  # the step whose loss was NaN/Inf, when training stopped there

    @property
    def status(self) -> dict:
        """How the final weights came about: trained from scratch, resumed from a checkpoint, or reused."""
        kind = "trained" if self.resumed_from == 0 else "reused" if self.resumed_from >= self.steps else "resumed"
        out = {"status": kind, "from_step": self.resumed_from, "steps": self.steps}
        if self.discarded:
            out["discarded_checkpoint"] = self.discarded
        if self.nonfinite_at is not None:
            out["nonfinite_loss_at_step"] = self.nonfinite_at
        return out


class CorruptCheckpoint(Exception):
    pass


def _load_checkpoint(path: Path, module: nn.Module, optimizer, scheduler, steps: int) -> tuple[int, list[dict]]:
    """Restore a checkpoint written by `train`; any unreadable, inconsistent or unsafe one raises CorruptCheckpoint.
    `weights_only` loads tensors and plain containers only: a file carrying code (a planted pickle) fails to load
    without running it."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        step, log = int(state["step"]), list(state["log"])
        if not 0 < step <= steps or len(log) != step:
            raise ValueError(f"it is at step {step} with {len(log)} log rows, of {steps} steps")
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except Exception as exc:  # truncated file, wrong shapes, missing keys: all mean "recompute"
        raise CorruptCheckpoint(f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    return step, log


def train(module: nn.Module, loss_fn: Callable[[Step], dict], *, n_items: int, steps: int, spec: TrainingSpec,
          lr: float, seed: int, checkpoint: Path, label: str, quick_eval: Callable[[], float] | None = None,
          progress=None, processes: Processes | None = None,
          after_step: Callable[[], None] | None = None) -> TrainResult:
    """Train `module`'s trainable parameters; `loss_fn(step)` returns {"total": ..., other losses...} for
    `step.local`, this process's shard of the global batch, with global values (see `harness.sharding`), and
    optionally "stats": {name: float} logged beside the losses. `after_step` runs after every optimiser step
    (the flow bridge's EMA update). A NaN/Inf total fails the run unless
    `spec.on_nonfinite_loss` is "stop": then training ends before that step's update."""
    processes = processes or Processes()
    on_gpu = next(module.parameters()).device.type == "cuda"
    accelerator = Accelerator(mixed_precision="bf16" if on_gpu else "no", cpu=not on_gpu)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=spec.weight_decay)
    warmup = min(spec.warmup_steps, max(0, steps - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, steps))
    log: list[dict] = []
    start, discarded = 0, None
    if checkpoint.is_file():
        initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
        try:
            start, log = _load_checkpoint(checkpoint, module, optimizer, scheduler, steps)
        except CorruptCheckpoint as exc:
            discarded = str(exc)
            warnings.warn(f"discarded a corrupt checkpoint and trained from step 0: {discarded}", stacklevel=2)
            checkpoint.unlink(missing_ok=True)
            module.load_state_dict(initial)
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=spec.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, steps))
            start, log = 0, []
    optimizer = accelerator.prepare_optimizer(optimizer)  # the module is not wrapped: gradients are averaged here
    resumed_from = start
    if progress is not None:
        progress.update(start)
    began = time.perf_counter()
    module.train()
    nonfinite_at = None
    for step in range(start, steps):
        with accelerator.autocast():
            losses = loss_fn(Step(batch_indices(step, spec.batch_size, n_items, seed), processes))
        stats = losses.pop("stats", {})
        total = losses["total"]
        if not torch.isfinite(total):
            if spec.on_nonfinite_loss == "stop":
                nonfinite_at = step + 1
                warnings.warn(f"{label}: the training loss became {float(total.detach())} at step {step + 1}; training stops "
                              f"there (training.on_nonfinite_loss: stop)", stacklevel=2)
                break
            raise FloatingPointError(f"{label}: the training loss became {float(total.detach())} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(total)
        average_gradients(params, processes)
        grad_norm = accelerator.clip_grad_norm_(params, spec.grad_clip)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        row = {"run": label, "step": step + 1, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
               **{f"{k}_loss": float(v.detach()) for k, v in losses.items()}, **stats}
        if quick_eval is not None and ((step + 1) % spec.quick_eval_every == 0 or step + 1 == steps):
            module.eval()
            row["quick_eval_accuracy"] = quick_eval()
            module.train()
        log.append(row)
        if processes.is_main and ((step + 1) % spec.checkpoint_every == 0 or step + 1 == steps):
            state = {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step + 1, "log": log}
            atomic_write_with(checkpoint, lambda tmp: torch.save(state, tmp))
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"{label} loss {float(total.detach()):.3f}")
    module.eval()
    return TrainResult(log, resumed_from, time.perf_counter() - began, steps, discarded, nonfinite_at)
