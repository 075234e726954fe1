"""Pack variable-length token sequences into fixed-length rows, kept apart without a mask.

A row of length T holds several whole sequences back to back, then padding to T. Inside a row,
`position_ids` restart at 0 for each sequence, and `cu_seq_lens` marks where each sequence (and
each row's padding) starts in the flattened [B * T] token stream: variable-length attention
(`trainer.attention`) attends causally inside each span only, so every token sees only the earlier
tokens of its own sequence and the logits are those each sequence would get on its own. Memory is
linear in T: nothing of size T x T is built (`dense_attention_mask` is the O(T^2) reference that
training used before, kept for tests and the memory benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import torch


class TokenSequence(Protocol):
    """What packing needs of one sequence (e.g. a `trainer.tokenize.TokenizedTrajectory`)."""

    input_ids: Sequence[int]
    assistant_mask: Sequence[int]
    logprobs: Sequence[float]


@dataclass
class PackedBatch:
    """B rows of T tokens. Padding has seq_ids -1, mask False, advantage 0, old logprob NaN.

    `cu_seq_lens` [S + 1] int32 are the segment starts in the flattened [B * T] stream (every
    sequence, and each row's padding, is a segment; the last entry is B * T), `max_length` the
    longest segment: flash-attention's varlen arguments.
    """

    input_ids: torch.Tensor  # [B, T] int64
    position_ids: torch.Tensor  # [B, T] int64, 0 at the first token of each sequence
    seq_ids: torch.Tensor  # [B, T] int64, index of the source sequence, -1 on padding
    assistant_mask: torch.Tensor  # [B, T] bool, tokens that enter the loss
    advantages: torch.Tensor  # [B, T] float32, the sequence's advantage on each of its tokens
    old_logprobs: torch.Tensor  # [B, T] float32, sampler logprobs (nats), NaN when unknown
    cu_seq_lens: torch.Tensor  # [S + 1] int32, segment starts in the flattened stream
    max_length: int  # tokens in the longest segment

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int((self.seq_ids >= 0).sum())

    def model_inputs(self) -> dict[str, torch.Tensor | int]:
        """Keyword arguments for a transformers causal LM's forward on these rows, for a model on
        `trainer.attention.VARLEN` or flash-attention (no attention mask: the segments say it)."""
        return dict(
            input_ids=self.input_ids,
            position_ids=self.position_ids,
            cu_seq_lens_q=self.cu_seq_lens,
            cu_seq_lens_k=self.cu_seq_lens,
            max_length_q=self.max_length,
            max_length_k=self.max_length,
        )

    def attention_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense block-diagonal causal mask for these rows, [B, 1, T, T]: O(T^2), reference
        only (see `dense_attention_mask`)."""
        return dense_attention_mask(self.seq_ids, dtype)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> PackedBatch:
        return PackedBatch(**{f.name: (fn(v) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                              for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        return self._map(torch.Tensor.pin_memory)


def plan_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """First-fit decreasing: indices of `lengths` grouped into rows whose sums fit `row_length`.

    Longest sequences go first, each into the first row with room; ties keep input order, so
    the plan is deterministic. Raises ValueError for a sequence longer than a row.
    """
    too_long = [i for i, n in enumerate(lengths) if n > row_length]
    if too_long:
        i = too_long[0]
        raise ValueError(f"sequence {i} has {lengths[i]} tokens, more than row_length={row_length}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(row_length)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def pack_sequences(
    sequences: Sequence[TokenSequence],
    advantages: Sequence[float],
    row_length: int,
    pad_token_id: int = 0,
) -> PackedBatch:
    """Pack `sequences` (with one advantage each) into rows of `row_length` tokens.

    The first token of each sequence is dropped from the mask: nothing in its own sequence
    predicts it (in a row, the previous token belongs to another sequence).
    """
    if len(sequences) != len(advantages):
        raise ValueError(f"{len(sequences)} sequences but {len(advantages)} advantages")
    lengths = [len(s.input_ids) for s in sequences]
    rows = plan_rows(lengths, row_length)
    shape = (len(rows), row_length)
    batch = PackedBatch(
        input_ids=torch.full(shape, pad_token_id, dtype=torch.long),
        position_ids=torch.zeros(shape, dtype=torch.long),
        seq_ids=torch.full(shape, -1, dtype=torch.long),
        assistant_mask=torch.zeros(shape, dtype=torch.bool),
        advantages=torch.zeros(shape, dtype=torch.float32),
        old_logprobs=torch.full(shape, math.nan, dtype=torch.float32),
        cu_seq_lens=torch.zeros(0, dtype=torch.int32),
        max_length=0,
    )
    starts: list[int] = []
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            seq, n = sequences[i], lengths[i]
            if not len(seq.assistant_mask) == len(seq.logprobs) == n:
                raise ValueError(
                    f"sequence {i}: input_ids, assistant_mask, logprobs differ in length"
                )
            span = slice(at, at + n)
            starts.append(r * row_length + at)
            batch.input_ids[r, span] = torch.as_tensor(seq.input_ids, dtype=torch.long)
            batch.position_ids[r, span] = torch.arange(n)
            batch.seq_ids[r, span] = i
            batch.assistant_mask[r, span] = torch.as_tensor(seq.assistant_mask, dtype=torch.bool)
            batch.assistant_mask[r, at] = False
            batch.advantages[r, span] = float(advantages[i])
            batch.old_logprobs[r, span] = torch.as_tensor(seq.logprobs, dtype=torch.float32)
            at += n
        # Padding counts up from 0 too, so that position ids stay within the model's range; it is
        # a segment of its own (it attends to itself only, and never enters the loss).
        batch.position_ids[r, at:] = torch.arange(row_length - at)
        if at < row_length:
            starts.append(r * row_length + at)
    bounds = torch.tensor([*starts, len(rows) * row_length], dtype=torch.int32)
    batch.cu_seq_lens = bounds
    batch.max_length = int(bounds.diff().max()) if len(bounds) > 1 else 0
    return batch


def dense_attention_mask(
    seq_ids: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive block-diagonal causal mask [B, 1, T, T] from segment ids [B, T].

    O(T^2) memory: the reference for tests and `benchmarks/packing_memory.py`, not for training
    (which uses `cu_seq_lens`). Query t may attend key s when s <= t and both belong to the same segment. Padding (-1) is one
    more segment: its rows are never empty, so softmax has no all-masked row (no NaN).
    """
    t = seq_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=seq_ids.device).tril()
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    allowed = (same & causal)[:, None]
    zero = torch.zeros((), dtype=dtype, device=seq_ids.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
