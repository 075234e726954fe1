"""One training step, top to bottom: packed batches in, one AdamW update of the adapter out.

    batches = step_batches(run, step, device=device, pad_token_id=tokenizer.pad_token_id)
    result = train_step(model, optimizer, batches, learning_rate=1e-5, beta=0.0)

The step's sequences come from the store (`tokens.lance`, written by `trainer.tokenize_step`)
through `TokenLoader`, which reads them a batch of sequences at a time (prefetched in a thread,
pinned and copied asynchronously on a GPU). Each batch it yields is a `PackedBatch`: whole
sequences packed back to back into rows (no padding between them), kept apart by variable-length
attention (`trainer.attention`: segment bounds, no mask), with each sequence's advantage and its
sampler logprobs on its tokens. For every batch (a micro-batch):

1. forward on the packed rows -> token logprobs of the policy (the adapter on);
2. with `beta > 0`, the same forward with the adapter off (the base model: the reference policy,
   no gradient) for the KL penalty;
3. GRPO loss: clipped ratio against the sampler's logprobs (ratio 1 where they are unknown),
   plus `beta` times the k3 KL estimate; backward of the token-weighted sum.

Gradients are accumulated over all micro-batches and divided by the step's trainable token
count (so the update is the mean over every trainable token of the step, however it was split),
clipped to `max_grad_norm`, and applied once by AdamW at `learning_rate`. Under torchrun each rank
trains its own shard; the gradient sums, token counts and loss sums are summed across ranks in
one collective before the division, so N ranks make the update one process makes (float
rounding aside), and ranks with unequal numbers of micro-batches never wait on each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

import artstore as art
from trainer.attention import use_varlen_attention
from trainer.distributed import all_reduce_sum_, rank_world
from trainer.loader import TokenLoader, pack_rows
from trainer.lora import trainable_parameters, with_adapter_disabled
from trainer.loss import grpo_loss, token_logprobs
from trainer.packing import PackedBatch


@dataclass(frozen=True)
class StepResult:
    """What one training step did. Losses are means over the step's trainable tokens; under
    torchrun, every figure is the whole step's (all ranks), the same on every rank."""

    loss: float
    policy_loss: float
    kl: float  # mean k3 estimate of KL(policy || base); 0 when beta == 0
    clip_fraction: float
    grad_norm: float  # before clipping
    learning_rate: float
    num_tokens: int  # real tokens forwarded (prompts included, padding not)
    num_trainable: int  # tokens in the loss
    num_batches: int
    tokens_per_s: float
    seconds: float


def step_batches(
    run: art.Run,
    step: int,
    *,
    device: torch.device | str,
    pad_token_id: int,
    row_length: int = 2048,
    batch_size: int = 64,
    version: int | None = None,
    split: str = "train",
) -> TokenLoader:
    """The step's training sequences from the store, `batch_size` sequences per micro-batch,
    each packed into rows of `row_length` tokens, on `device`: this rank's contiguous shard of
    them under torchrun (`trainer.distributed`), all of them in one process. `version` pins the
    tokens table version read (give every rank the same one)."""
    rank, world_size = rank_world()
    return TokenLoader(
        run, step, batch_size, device, rank=rank, world_size=world_size, split=split, version=version,
        pack=pack_rows(row_length, pad_token_id),
    )  # fmt: skip


def make_optimizer(model: torch.nn.Module, learning_rate: float = 1e-5) -> torch.optim.AdamW:
    """AdamW over the adapter's parameters, without weight decay (the rate is set per step)."""
    return torch.optim.AdamW(trainable_parameters(model), lr=learning_rate, weight_decay=0.0)


def batch_loss(
    model: torch.nn.Module,
    batch: PackedBatch,
    *,
    beta: float = 0.0,
    clip_epsilon: float = 0.2,
    objective: Callable[..., Any] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of one packed batch (mean over its trainable tokens) and its stats. With
    `beta` > 0 the reference logprobs come from the same model with the adapter disabled.
    `objective` (e.g. `trainer.art_loss.ArtObjective`) replaces the GRPO loss: it is called as
    objective(new, old, advantages, mask, ref), with ref when its `uses_reference` is true."""
    use_varlen_attention(model)
    inputs = batch.model_inputs()
    ref = None
    if beta > 0 or getattr(objective, "uses_reference", False):
        with torch.no_grad(), with_adapter_disabled(model):
            ref = token_logprobs(model(**inputs).logits, batch.input_ids)
    new = token_logprobs(model(**inputs).logits, batch.input_ids)
    if objective is not None:
        return objective(new, batch.old_logprobs, batch.advantages, batch.assistant_mask, ref)
    return grpo_loss(
        new,
        batch.old_logprobs,
        batch.advantages,
        batch.assistant_mask,
        clip_epsilon=clip_epsilon,
        kl_coef=beta,
        ref_logprobs=ref,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[PackedBatch],
    *,
    learning_rate: float,
    beta: float = 0.0,
    clip_epsilon: float = 0.2,
    max_grad_norm: float = 1.0,
    objective: Callable[..., Any] | None = None,
) -> StepResult:
    """One optimizer step over every batch in `batches` (see the module docstring); `objective`
    replaces the GRPO loss (see `batch_loss`)."""
    start = time.perf_counter()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    num_tokens = num_trainable = num_batches = 0

    for batch in batches:
        n = int(batch.assistant_mask.sum())
        num_tokens += batch.num_tokens
        num_batches += 1
        if n == 0:
            continue
        loss, stats = batch_loss(model, batch, beta=beta, clip_epsilon=clip_epsilon, objective=objective)
        (loss * n).backward()  # a token-weighted sum; divided by the step's count below
        num_trainable += n
        totals["loss"] += float(loss.detach()) * n
        for k in ("policy_loss", "kl", "clip_fraction"):
            totals[k] += stats[k] * n

    # Sum across ranks (no-op in one process): every rank then holds the step's global sums.
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = params[0].device if params else torch.device("cpu")
    counts = torch.tensor([num_tokens, num_trainable, num_batches, *totals.values()], dtype=torch.float64,
                          device=device)
    all_reduce_sum_(grads)
    all_reduce_sum_([counts])
    num_tokens, num_trainable, num_batches = (int(x) for x in counts[:3].tolist())
    totals = dict(zip(totals, counts[3:].tolist(), strict=True))
    for p, g in zip(params, grads, strict=True):
        p.grad = g

    grad_norm = 0.0
    if num_trainable:
        for p in params:
            p.grad.div_(num_trainable)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    seconds = time.perf_counter() - start
    mean = {k: v / max(num_trainable, 1) for k, v in totals.items()}
    return StepResult(
        loss=mean["loss"],
        policy_loss=mean["policy_loss"],
        kl=mean["kl"],
        clip_fraction=mean["clip_fraction"],
        grad_norm=grad_norm,
        learning_rate=learning_rate,
        num_tokens=num_tokens,
        num_trainable=num_trainable,
        num_batches=num_batches,
        tokens_per_s=num_tokens / seconds if seconds > 0 else 0.0,
        seconds=seconds,
    )
