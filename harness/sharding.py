"""A run's work split over processes (`accelerate launch --num_processes N`): shards, gathers, gradients.

Every process holds the same model and reads a contiguous shard of every global batch and of
every evaluation set. Loss terms are built so that each term's value is the global batch's
value on every process, and its gradient is scaled so that averaging gradients over processes
(what `average_gradients` does after backward, as DDP would) gives the global batch's gradient.
So N processes train like one process on the same global batch, and logs are identical.
With one process every function here is the identity and no collective call is made.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from harness.context import Processes

T = TypeVar("T")


class ShardingError(RuntimeError):
    """More processes than items to split (a user error: one line, exit 1)."""


def require_shards(n: int, processes: Processes, what: str) -> None:
    """Refuse, before any work, to split n items over more processes than items."""
    if n < processes.count:
        raise ShardingError(f"{what} is {n}: it cannot be split over {processes.count} processes "
                            f"(launch at most {n} processes)")


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over n items: contiguous, sizes differing by at most one."""
    size, extra = divmod(n, count)
    start = index * size + min(index, extra)
    return start, start + size + (1 if index < extra else 0)


def shard(items: list[T], processes: Processes) -> list[T]:
    start, stop = shard_bounds(len(items), processes.index, processes.count)
    return items[start:stop]


def _distributed(processes: Processes) -> bool:
    return processes.count > 1


def gather_in_order(local: list, processes: Processes) -> list:
    """Every process's list, concatenated in process order, on every process (shards -> the whole set)."""
    if not _distributed(processes):
        return local
    parts: list = [None] * processes.count
    torch.distributed.all_gather_object(parts, local)
    return [x for part in parts for x in part]


def map_sharded(fn: Callable[[list], list], items: list, processes: Processes) -> list:
    """fn over this process's shard of `items`, results gathered in item order on every process."""
    return gather_in_order(fn(shard(items, processes)), processes)


def _all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().clone()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
    return value


def _global_value(local: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` as the result, with `local`'s gradient."""
    return local - local.detach() + value.to(local.dtype)


class Step:
    """One training step's global batch and this process's shard of it.

    With `empty_shards`, a batch smaller than the process count is allowed (an alignment epoch's last batch or a
    validation batch): a loss built only from `mean_of` and `over_batch` is defined on an empty shard."""

    def __init__(self, indices: list[int], processes: Processes, empty_shards: bool = False):
        self.all = indices
        self.local = shard(indices, processes)
        self.processes = processes
        if not empty_shards:
            require_shards(len(indices), processes, "the global batch")

    def token_mean(self, losses: torch.Tensor) -> torch.Tensor:
        """Mean of per-token losses over the global batch (each process holds its shard's tokens)."""
        if not _distributed(self.processes):
            return losses.mean()
        count = self.processes.count
        local_sum = losses.sum()
        totals = _all_reduce_sum(torch.stack([local_sum.detach().float(), torch.tensor(float(losses.numel()))]))
        return _global_value(local_sum * count / totals[1], totals[0] / totals[1])

    def item_mean(self, local_mean: torch.Tensor) -> torch.Tensor:
        """A mean over items that this process computed over its shard, made the global batch's mean."""
        if not _distributed(self.processes):
            return local_mean
        share = len(self.local) / len(self.all)
        value = _all_reduce_sum(local_mean.detach().float() * share)
        return _global_value(local_mean * share * self.processes.count, value)

    def mean_of(self, values: list[torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
        """The whole batch's mean of per-item 0-d values, of which this process holds its shard's (possibly none)."""
        local = torch.stack(values) if values else torch.zeros(0, device=device)
        return self.over_batch(local, torch.mean)

    def over_batch(self, local: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """fn of the whole batch's rows (e.g. a diversity loss across items), differentiable in this shard's rows."""
        if not _distributed(self.processes):
            return fn(local)
        sizes = [stop - start for start, stop in
                 (shard_bounds(len(self.all), r, self.processes.count) for r in range(self.processes.count))]
        padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))  # all_gather wants equal shapes
        padded[: len(local)] = local.detach()
        parts = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(parts, padded)
        parts = [part[:size] for part, size in zip(parts, sizes)]
        parts[self.processes.index] = local
        value = fn(torch.cat(parts))
        return _global_value(value * self.processes.count, value.detach())


def average_gradients(params: list[torch.nn.Parameter], processes: Processes) -> None:
    """Average every gradient over processes (after backward, before clipping and the optimiser step)."""
    if not _distributed(processes):
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
        p.grad /= processes.count
