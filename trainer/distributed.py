"""Several ranks (torchrun): who is rank 0, sums across ranks, and rank 0's decisions for all.

    torchrun --nproc_per_node 2 -m trainer.demo       # gloo on CPU, nccl on GPUs

A training step under N ranks: rank 0 logs and tokenizes the step, then hands every rank the
same (step, tokens-table version) (`on_main`); each rank trains on its own contiguous shard of
the step's sequences; gradients and the trainable-token count are summed across ranks once per
step (`all_reduce_sum_`), so the update is the mean over every trainable token of the step: what
one process computes, to float rounding. There is one collective per step, not one per backward,
so ranks with different numbers of micro-batches (or none) never wait on each other. Rank 0
alone saves the checkpoint; the others wait for it (`on_main`) and load it.

Without an initialised process group (a plain `python` run) everything here is a no-op for one
rank: rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

import artstore as art

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def is_main() -> bool:
    """Whether this process is rank 0 (the only one that logs and saves)."""
    return rank_world()[0] == 0


def init_from_env(device: str | None = None) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment): nccl on
    CUDA (each rank on GPU LOCAL_RANK), else gloo. Returns whether this run is distributed.
    Idempotent; a no-op for a plain single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return is_distributed()


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Sum `tensors` across ranks, in place, in one collective (they are flattened into one
    buffer of the first tensor's dtype and device). No-op for one rank."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    at = 0
    for t in tensors:
        n = t.numel()
        t.detach().copy_(flat[at:at + n].view_as(t))
        at += n


class _Failed:
    def __init__(self, message: str):
        self.message = message


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and give its result to every rank (pickled; keep it small).

    Every rank must call this at the same point. Other ranks wait here until rank 0 is done; if
    `fn` raised on rank 0, it re-raises there and the others raise BackendError (no rank is left
    waiting on a collective that never comes)."""
    if not is_distributed():
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = fn()
        except BaseException as e:  # told to the other ranks, then raised here
            error = e
            box[0] = _Failed(f"{type(e).__name__}: {e}")
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if isinstance(box[0], _Failed):
        raise art.BackendError(f"rank 0 failed ({box[0].message}); see rank 0's error above")
    return box[0]
