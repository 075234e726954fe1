"""The tokens table: one row per training sequence, what the trainer trains on.

The backend tokenizes a step's trajectories into rows of `schemas/tokens.json` (token ids,
assistant mask, sampler logprobs, advantage, ids back to the trajectory) and writes them here;
the trainer's loader streams them back as Arrow record batches. Writes upsert by `sequence_id`,
so re-tokenizing a step after a crash replaces rows instead of duplicating them. Reads are in
storage order, which is stable for a table version: that order is what ranks shard.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import ValidationError
from artstore.names import check_segment, sql_quote
from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, scans, writes

TABLE = "tokens"
KEY = "sequence_id"
# Filled in on write when the caller leaves them out.
DERIVED = ("num_tokens", "num_trainable", "recorded_at")
LISTS = ("input_ids", "assistant_mask", "logprobs")
DEFAULT_BATCH_SIZE = 32


def schema() -> pa.Schema:
    """The Arrow schema of the tokens table (from schemas/tokens.json)."""
    return arrow_schema(TABLE)


def shard_range(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the rows that `rank` of `world_size` reads: contiguous, in order, covering
    every row exactly once over all ranks; shard sizes differ by at most one row."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValidationError("world_size", f"must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValidationError("rank", f"must be an int in [0, {world_size}), got {rank!r}")
    return rank * num_rows // world_size, (rank + 1) * num_rows // world_size


# -- validation ------------------------------------------------------------------------------
def _as_table(data: Any) -> pa.Table:
    """A pa.Table of the given columns, without casting (a table, a batch, a dict of columns, or
    a sequence of row dicts)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, Mapping):
        columns = dict(data)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            return schema().empty_table()
        if not all(isinstance(r, Mapping) for r in data):
            raise ValidationError("tokens", "rows must be mappings of column name to value")
        names = list(dict.fromkeys(k for r in data for k in r))
        columns = {k: [r.get(k) for r in data] for k in names}
    else:
        raise ValidationError("tokens", f"expected a pyarrow Table, a RecordBatch, a dict of columns or a list "
                                        f"of row dicts, got {type(data).__name__}")
    fields = {f.name: f for f in schema()}
    arrays = {}
    for name, values in columns.items():
        if not isinstance(name, str) or name not in fields:
            raise ValidationError(str(name), "is not a column of the tokens table (see schemas/tokens.json)")
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays[name] = values
            continue
        if pa.types.is_timestamp(fields[name].type) and any(
                isinstance(v, datetime) and v.tzinfo is None for v in values):
            raise ValidationError(name, "must be timezone-aware (UTC), got a naive datetime")
        try:
            arrays[name] = pa.array(values, type=fields[name].type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
            raise ValidationError(name, f"cannot be stored as {fields[name].type}: {e}") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValidationError("tokens", f"columns differ in length: { {k: len(a) for k, a in arrays.items()} }")
    return pa.table(arrays) if arrays else pa.table({})


def _cast(name: str, column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if column.type == target:
        return column
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        raise ValidationError(name, "must be timezone-aware (UTC), got a naive timestamp")
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise ValidationError(name, f"cannot be stored as {target} (given {column.type}): {e}") from None


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _offsets(column: pa.ChunkedArray) -> np.ndarray:
    """Row offsets (int64, starting at 0, one more than rows) of a list column."""
    parts, base = [np.zeros(1, np.int64)], 0
    for chunk in column.chunks:
        off = chunk.offsets.to_numpy().astype(np.int64)
        parts.append(off[1:] - off[0] + base)
        base += int(off[-1] - off[0])
    return np.concatenate(parts)


def _flat(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values of a list column, row after row (slices of the Arrow buffers, no copy)."""
    return pa.chunked_array([pc.list_flatten(c) for c in column.chunks], column.type.value_type)


def conform(data: Any) -> pa.Table:
    """`data` as a table of exactly the tokens schema, or ValidationError naming the bad field.

    Accepts a pa.Table / RecordBatch / dict of columns / list of row dicts. `num_tokens`,
    `num_trainable` and `recorded_at` are computed when absent and checked when given.
    """
    given = _as_table(data)
    target = schema()
    n = given.num_rows
    for name in given.column_names:
        if target.get_field_index(name) < 0:
            raise ValidationError(name, "is not a column of the tokens table (see schemas/tokens.json)")
    if len(set(given.column_names)) != len(given.column_names):
        raise ValidationError("tokens", f"duplicate column names: {given.column_names}")
    missing = [f.name for f in target if f.name not in given.column_names and f.name not in DERIVED]
    if missing:
        raise ValidationError(missing[0], "is missing (required by schemas/tokens.json)")
    cols: dict[str, pa.ChunkedArray] = {}
    for field in target:
        if field.name not in given.column_names:
            continue
        col = _cast(field.name, given.column(field.name), field.type)
        if col.null_count:
            raise ValidationError(field.name, f"is null in row {_first(np.asarray(col.is_null()))}; "
                                              "the field is required")
        cols[field.name] = col
    ids = cols[KEY]
    if n and pc.min(pc.utf8_length(ids)).as_py() == 0:
        raise ValidationError(KEY, f"is empty in row {_first(np.asarray(pc.equal(pc.utf8_length(ids), 0)))}")
    if pc.count_distinct(ids).as_py() != n:
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ValidationError(KEY, f"{dup!r} appears more than once in one write")

    def where(bad: np.ndarray) -> str:
        i = _first(bad)
        return f"row {i} (sequence_id {ids[i].as_py()!r})"

    offsets = {}
    for name in LISTS:
        offsets[name] = _offsets(cols[name])
        if _flat(cols[name]).null_count:
            hint = "; use NaN for an unknown logprob" if name == "logprobs" else ""
            raise ValidationError(name, f"holds a null value{hint}")
    lengths = np.diff(offsets["input_ids"])
    for name in ("assistant_mask", "logprobs"):
        other = np.diff(offsets[name])
        if n and (other != lengths).any():
            bad = other != lengths
            i = _first(bad)
            raise ValidationError(name, f"has {other[i]} values but input_ids has {lengths[i]} in {where(bad)}")
    if lengths.sum() and pc.min(_flat(cols["input_ids"])).as_py() < 0:
        raise ValidationError("input_ids", "token ids must be >= 0")
    mask_flat = _flat(cols["assistant_mask"]).to_numpy()
    if mask_flat.size and ((mask_flat != 0) & (mask_flat != 1)).any():
        raise ValidationError("assistant_mask", "values must be 0 or 1")
    mask_off = offsets["assistant_mask"]
    trainable = np.diff(np.concatenate([[0], np.cumsum(mask_flat, dtype=np.int64)])[mask_off])
    for name, expected in (("num_tokens", lengths), ("num_trainable", trainable)):
        if name in cols:
            got = cols[name].to_numpy()
            if n and (got != expected).any():
                bad = got != expected
                raise ValidationError(name, f"is {got[_first(bad)]}, expected {expected[_first(bad)]} in {where(bad)}")
        else:
            cols[name] = pa.chunked_array([pa.array(expected, pa.int32())])
    if "recorded_at" not in cols:
        cols["recorded_at"] = pa.chunked_array([pa.array([writes.now_utc()] * n, target.field("recorded_at").type)])
    steps = cols["step"].to_numpy()
    if n and (steps < 0).any():
        raise ValidationError("step", f"must be >= 0, got {steps[_first(steps < 0)]} in {where(steps < 0)}")
    for name in ("reward", "advantage"):
        values = cols[name].to_numpy()
        if n and not np.isfinite(values).all():
            bad = ~np.isfinite(values)
            raise ValidationError(name, f"is {values[_first(bad)]} in {where(bad)}; must be finite")
    for split in pc.unique(cols["split"]).to_pylist():
        check_segment("split", split)
    return pa.Table.from_arrays([cols[f.name] for f in target], schema=target)


# -- the table -------------------------------------------------------------------------------
def _where(step: int | None, split: str | None) -> str | None:
    parts = []
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValidationError("step", f"must be an int, got {step!r}")
        parts.append(f"step = {int(step)}")
    if split is not None:
        parts.append(f"split = {sql_quote(check_segment('split', split))}")
    return " AND ".join(parts) or None


def _columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        raise ValidationError("columns", "must be a list of column names, not a string")
    names = schema().names
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValidationError("columns", f"{unknown[0]!r} is not a column of the tokens table; have {names}")
    return list(columns)


class TokenTable:
    """The tokens table of the run at `run_location`."""

    def __init__(self, run_location: Location):
        self.location = run_location.child(f"{TABLE}.lance")

    def write(self, data: Any) -> int:
        """Validate `data` (see `conform`) and upsert it by sequence_id in one commit: rows with a
        sequence_id already stored replace it. Returns the table version written."""
        table = conform(data)
        if table.num_rows == 0:
            return self.version()
        return writes.upsert(self.location, table, KEY)

    def version(self) -> int:
        """The latest version of the table (0 when it does not exist yet)."""
        return datasets.latest_version(self.location)

    def read(self, step: int | None = None, split: str | None = None, columns: Sequence[str] | None = None,
             version: int | None = None) -> pa.Table:
        """Rows matching `step` and `split`, in storage order (all of them when both are None)."""
        cols = _columns(columns)
        found = scans.scan(self.location, columns=cols, filter=_where(step, split), version=version)
        if found is None:
            empty = schema().empty_table()
            return empty if cols is None else empty.select(cols)
        return found

    def count(self, step: int | None = None, split: str | None = None, version: int | None = None) -> int:
        """How many rows match `step` and `split`."""
        return scans.count_rows(self.location, filter=_where(step, split), version=version)

    def batches(self, step: int | None = None, split: str | None = None, columns: Sequence[str] | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, rank: int = 0, world_size: int = 1,
                version: int | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of this rank's shard of the matching rows (see `shard_range`): every batch
        holds exactly `batch_size` rows except the last. Every rank reads one table version (the
        latest when `version` is None, fixed when the iteration starts)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError("batch_size", f"must be an int >= 1, got {batch_size!r}")
        shard_range(0, rank, world_size)  # validate before touching storage
        cols, where = _columns(columns), _where(step, split)
        return self._batches(cols, where, batch_size, rank, world_size, version)

    def _batches(self, cols: list[str] | None, where: str | None, batch_size: int, rank: int, world_size: int,
                 version: int | None) -> Iterator[pa.RecordBatch]:
        pinned = self.version() if version is None else version
        if pinned == 0:
            return
        positions = scans.match_positions(self.location, where, version=pinned)
        start, stop = shard_range(len(positions), rank, world_size)
        if stop <= start:
            return
        if positions[stop - 1] - positions[start] == stop - start - 1:
            # The shard is one run of rows in storage (a step written at once): read it as a row
            # range, without the filter.
            where, offset = None, int(positions[start])
        else:
            offset = start
        yield from exact_batches(scans.scan_batches(
            self.location, columns=cols, filter=where, batch_size=batch_size, offset=offset,
            limit=stop - start, version=pinned), batch_size)


def exact_batches(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut `batches` so that each holds `size` rows (the last may hold fewer). Batches that
    already have the size pass through untouched (no copy)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        if not pending and b.num_rows == size:
            yield b
            continue
        pending.append(b)
        held += b.num_rows
        while held >= size:
            merged = pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            yield merged.slice(0, size)
            rest = merged.slice(size)
            pending, held = ([rest] if rest.num_rows else []), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]

