"""tokens.lance -> tensors on the device: zero-copy from Arrow, packed, pinned, prefetched.

One training step reads its sequences from the run's tokens table (`Run.token_batches`), this
rank's even shard of them, `batch_size` sequences at a time. Each Arrow record batch becomes a
`TokenBatch` without copying a token: a list column is a flat values buffer plus row offsets, and
both go Arrow buffer -> numpy (zero-copy) -> `torch.from_numpy` (shares the memory). Those CPU
tensors are views of Arrow memory: read them, never write to them.

On a CUDA device each batch (packed by `pack` when given) is copied once into pinned memory and
sent with `non_blocking=True` on a side stream, by a background thread that keeps `prefetch`
batches ready; the training stream waits only on that batch's copy event (no host sync). On the
CPU the batches are the zero-copy views themselves (packed, when `pack` is given, in the thread). Lance is not fork-safe,
so there are no DataLoader worker processes: reading happens in a thread of this process (Lance
itself decodes in native threads).
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from artstore import Run, ValidationError, shard_range


def _spend_readonly_warning() -> None:
    """The loader's CPU tensors share Arrow's read-only memory on purpose (see the module
    docstring). torch warns about that once per process; spend that once here, silently, instead
    of installing a global warnings filter."""
    readonly = np.zeros(1)
    readonly.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.from_numpy(readonly)


_spend_readonly_warning()

TRAIN_COLUMNS = ("sequence_id", "input_ids", "assistant_mask", "logprobs", "advantage")
"""Columns the loader reads by default: what the GRPO loss needs, plus the id for logging."""


class SequenceView(NamedTuple):
    """One sequence of a TokenBatch (views, no copy); what `trainer.packing` takes."""

    input_ids: torch.Tensor
    assistant_mask: torch.Tensor
    logprobs: torch.Tensor


@dataclasses.dataclass
class TokenBatch:
    """B sequences, ragged: sequence i is `tokens[c][offsets[i]:offsets[i + 1]]`.

    `tokens` holds the per-token columns read (input_ids int32, assistant_mask int8, logprobs
    float32, flat), `rows` the numeric per-sequence columns (advantage float32, reward float64,
    step int64, ...), `source` the Arrow batch they came from (strings and times stay there).
    """

    offsets: torch.Tensor  # [B + 1] int32, offsets[0] == 0
    tokens: dict[str, torch.Tensor]
    rows: dict[str, torch.Tensor]
    source: pa.RecordBatch

    @property
    def num_sequences(self) -> int:
        return self.source.num_rows

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1]) if len(self.offsets) else 0

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tokens["input_ids"]

    @property
    def assistant_mask(self) -> torch.Tensor:
        return self.tokens["assistant_mask"]

    @property
    def logprobs(self) -> torch.Tensor:
        return self.tokens["logprobs"]

    @property
    def advantages(self) -> torch.Tensor:
        return self.rows["advantage"]

    @property
    def sequence_ids(self) -> list[str]:
        return self.source.column("sequence_id").to_pylist()

    def lengths(self) -> torch.Tensor:
        """Tokens per sequence, [B]."""
        return self.offsets[1:] - self.offsets[:-1]

    def sequences(self) -> list[SequenceView]:
        """Each sequence's input_ids, assistant_mask and logprobs (slices of the flat tensors)."""
        bounds = self.offsets.tolist()
        return [SequenceView(*(self.tokens[c][a:b] for c in ("input_ids", "assistant_mask", "logprobs")))
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _numpy(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=True)  # raises rather than copy (e.g. if nulls sneak in)


def to_tensors(batch: pa.RecordBatch) -> TokenBatch:
    """An Arrow batch of the tokens table as CPU tensors that share its buffers (no copy).

    List columns become flat values + offsets; numeric columns become [B] tensors; other columns
    (strings, timestamps) stay in `source`. Only a sliced batch pays a copy of its B + 1 offsets.
    """
    offsets: torch.Tensor | None = None
    tokens, rows = {}, {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_list(column.type):
            off = _numpy(column.offsets)
            start, stop = int(off[0]), int(off[-1])
            tokens[name] = torch.from_numpy(_numpy(column.values.slice(start, stop - start)))
            if offsets is None:
                offsets = torch.from_numpy(off - start if start else off)
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            rows[name] = torch.from_numpy(_numpy(column))
    if offsets is None:
        offsets = torch.zeros(batch.num_rows + 1, dtype=torch.int32)
    return TokenBatch(offsets, tokens, rows, batch)


def pack_rows(row_length: int, pad_token_id: int = 0) -> Callable[[TokenBatch], Any]:
    """A `pack` for TokenLoader: `trainer.packing.pack_sequences` into rows of `row_length`."""
    from trainer.packing import pack_sequences

    def pack(batch: TokenBatch) -> Any:
        return pack_sequences(batch.sequences(), batch.advantages.tolist(), row_length, pad_token_id)

    return pack


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`obj` with `fn` applied to every tensor in it (tensors, dicts, lists, tuples, dataclasses)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else RANK/WORLD_SIZE (torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class _Failed(NamedTuple):
    error: BaseException


_END = object()


class TokenLoader:
    """Iterate one step's training sequences as batches on `device`.

    Each item is `pack(TokenBatch)` when `pack` is given (e.g. `pack_rows(4096)`), else the
    TokenBatch itself, with every tensor on `device`. Ranks default to torch.distributed, or
    RANK/WORLD_SIZE under torchrun; each rank reads a contiguous shard (`artstore.shard_range`),
    so shards differ by at most one sequence and `len()` by at most one batch. `prefetch` batches
    are prepared ahead in a background thread (see `threaded`; 0: everything in the caller's
    thread). `version` pins the tokens table version every rank reads (default: the latest when
    iteration starts); give every rank the same one under DDP if writers may be active.
    """

    def __init__(self, run: Run, step: int | None, batch_size: int, device: torch.device | str,
                 rank: int | None = None, world_size: int | None = None, prefetch: int = 2,
                 pin_memory: bool = True, *, split: str | None = None,
                 columns: Sequence[str] = TRAIN_COLUMNS, pack: Callable[[TokenBatch], Any] | None = None,
                 version: int | None = None):
        default_rank, default_world = dist_rank_world()
        self.run, self.step, self.split, self.version = run, step, split, version
        self.batch_size, self.columns, self.pack = batch_size, list(columns), pack
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        shard_range(0, self.rank, self.world_size)  # validates rank and world size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError("batch_size", f"must be an int >= 1, got {batch_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValidationError("prefetch", f"must be an int >= 0, got {prefetch!r}")
        self.prefetch = prefetch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.pin_memory = pin_memory and self.cuda
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None

    def __len__(self) -> int:
        """Batches this rank yields (reads the row count of the step)."""
        n = self.run.token_count(self.step, self.split, self.version)
        start, stop = shard_range(n, self.rank, self.world_size)
        return math.ceil((stop - start) / self.batch_size)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """This rank's Arrow batches, as read from the store."""
        return self.run.token_batches(self.step, self.split, self.columns, self.batch_size,
                                      self.rank, self.world_size, self.version)

    def _prepare(self, batch: pa.RecordBatch) -> tuple[Any, Any]:
        """Arrow -> tensors (views) -> packed -> pinned -> on the device (async). Returns the
        item and the CUDA event its copy records (None off CUDA)."""
        item = to_tensors(batch)
        if self.pack is not None:
            item = self.pack(item)
        if self.device.type == "cpu":
            return item, None  # already there: the views themselves
        if not self.cuda:
            return map_tensors(item, lambda t: t.to(self.device)), None
        if self.pin_memory:
            item = map_tensors(item, torch.Tensor.pin_memory)
        with torch.cuda.stream(self._stream):
            item = map_tensors(item, lambda t: t.to(self.device, non_blocking=self.pin_memory))
            copied = torch.cuda.Event()
            copied.record(self._stream)
        return item, copied

    def _ready(self, item: Any, copied: Any) -> Any:
        """Make the consumer's stream wait for the copy, and tell the allocator it uses the memory."""
        if copied is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            map_tensors(item, lambda t: t.record_stream(current) or t)
        return item

    @property
    def threaded(self) -> bool:
        """Whether a background thread prepares batches: when there is work to overlap with the
        caller's (packing, pinning, issuing copies). A plain CPU read hands out views of Arrow
        batches, and Lance's scanner already reads ahead in native threads: a Python thread would
        only add a handoff per batch."""
        return self.prefetch > 0 and (self.cuda or self.pack is not None)

    def __iter__(self) -> Iterator[Any]:
        if not self.threaded:
            for batch in self.batches():
                yield self._ready(*self._prepare(batch))
            return
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(ready, stop), daemon=True,
                                  name=f"token-loader-rank{self.rank}")
        worker.start()
        try:
            while True:
                got = ready.get()
                if got is _END:
                    return
                if isinstance(got, _Failed):
                    raise got.error
                yield self._ready(*got)
        finally:
            stop.set()
            worker.join()

    def _produce(self, ready: queue.Queue, stop: threading.Event) -> None:
        def put(x: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(x, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for batch in self.batches():
                if not put(self._prepare(batch)):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))
