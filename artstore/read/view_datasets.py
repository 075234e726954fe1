"""The Arrow datasets behind the SQL views: one per view, spanning every run a query may read.

`artstore.read.sql` registers each of these with DuckDB under the view's own name (`trajectories`,
`logs`, ...): there are no per-run tables or other internal names a query could reach. DuckDB reads
a dataset's `schema` to bind a query and calls `scanner(columns=, filter=)` to run it; the scan
then
- lists the query's runs (once per query, `Query.keys`), and keeps those whose constant `project`
  and `model` can satisfy the filter. pyarrow decides that, as it prunes the partitions of a
  partitioned dataset (`pruned`), so the runs left out are exactly those the filter rules out, for
  any query shape: pruned runs' tables are never opened;
- scans each kept run's Lance table (`RunSnapshot`: logs pinned first, visibility gate), pushing
  the filter and columns into Lance when the filter does not name `project` or `model`, and
  otherwise applying it in Arrow after adding those two columns;
- registers every reader it opens with the query, which closes them when the query ends, even when
  DuckDB stopped early (a LIMIT): a Lance reader left open until interpreter exit can hang or abort
  the exit while pyarrow's thread pool shuts down.

Runs whose copy in the store's pool of small runs is of their current logs version are read
from the pool in one scan (`pool_scan`), before the others.

`history` and `tokens` (columns that depend on the data) are in `artstore.read.computed_views`;
a scan of them that finds other columns than registered raises `SchemaChanged`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from artstore.errors import SqlError
from artstore.log.visibility import GATED, visible_mask
from artstore.read import pool_scan, small_tables
from artstore.read.query import Query

RUN_COLUMNS = ("project", "model")
# A filter naming project/model runs in Arrow. When it also names stored columns, those are read
# first, alone; if at most this share of the rows match, only theirs are fetched whole (`take`).
FETCH_AT_MOST = 0.1
# Runs whose opens and gates are read ahead, in parallel, while DuckDB consumes earlier runs' rows.
PREFETCH_THREADS = 4
RUN_FIELDS = [pa.field("project", pa.string()), pa.field("model", pa.string())]


class SchemaChanged(Exception):  # noqa: N818 - a signal to rebind, not an error the user sees
    """A data-dependent view (history, tokens) has other columns than DuckDB bound: rebind, rerun."""

    def __init__(self, view: str, schema: pa.Schema | None):
        super().__init__(view)
        self.view, self.schema = view, schema


def with_run_columns(schema: pa.Schema) -> pa.Schema:
    return pa.schema([*RUN_FIELDS, *schema])


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` made unique ignoring case, as DuckDB names the columns of a table: a name equal
    (ignoring case) to an earlier one gets `_1`, `_2`, ... (e.g. metrics `val/Loss` and `val/loss`
    are columns `val/Loss` and `val/loss_1`)."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 0
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def pruned(keys: list[str], filter: Any, schema: pa.Schema) -> list[str]:
    """The runs ("project/model") whose rows can match `filter`: pyarrow's partition pruning, with
    one partition per run whose expression is its project and model."""
    if filter is None or not keys or not _references(filter, schema, RUN_COLUMNS):
        return keys
    parts = [(pads.field("project") == p) & (pads.field("model") == m) for p, m in (k.split("/") for k in keys)]
    catalog = pads.FileSystemDataset.from_paths(  # never read: only the partition expressions are used
        [f"/{i}" for i in range(len(keys))], schema=schema, format=pads.IpcFileFormat(),
        filesystem=pafs.LocalFileSystem(), partitions=parts)
    return [keys[int(f.path[1:])] for f in catalog.get_fragments(filter=filter)]


def _references(filter: Any, schema: pa.Schema, columns: Sequence[str]) -> bool:
    """Whether `filter` names any of `columns` (it does not bind without them)."""
    rest = pa.schema([f for f in schema if f.name not in columns])
    try:
        filter.to_substrait(rest)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return True
    return False


def _filter_columns(filter: Any, schema: pa.Schema) -> list[str]:
    """The columns of `schema` that `filter` names (all when that cannot be told)."""
    try:
        filter.to_substrait(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return list(schema.names)
    return [c for c in schema.names if _references(filter, schema, [c])]


class Scan:
    """One scan of one view: per-run batches, with the readers registered for closing."""

    def __init__(self, query: Query, schema: pa.Schema, columns: Sequence[str] | None, filter: Any):
        self.query = query
        self.schema = schema  # the view's columns: project, model, then the table's
        self.out = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        self.filter = filter
        self.in_arrow = filter is not None and _references(filter, schema, RUN_COLUMNS)
        names = list(self.out.names)
        if self.in_arrow:
            names = list(dict.fromkeys([*names, *_filter_columns(filter, schema)]))
        self.stored = [c for c in names if c not in RUN_COLUMNS]  # what each run's table is asked for
        self.arrow_schema = pa.schema([schema.field(c) for c in names])
        # the stored columns the Arrow filter names: read alone first when the output is wider
        named = [c for c in _filter_columns(filter, schema) if c not in RUN_COLUMNS] if self.in_arrow else []
        self.filter_stored = named if named and set(self.stored) - set(named) else []

    def matching_offsets(self, key: str, reader: Any, committed: pa.Array | None) -> tuple[list[int], int]:
        """(the positions in scan order of the rows that pass the visibility gate and the filter,
        the rows read) from `reader`, a scan of `filter_stored` (and write_id) in dataset order."""
        project, model = key.split("/")
        offsets: list[int] = []
        seen = 0
        for batch in reader:
            n = batch.num_rows
            position = pa.array(np.arange(seen, seen + n, dtype=np.int64))
            seen += n
            if committed is not None:
                keep = visible_mask(batch.column("write_id"), committed)
                if keep is not None:
                    batch, position = batch.filter(keep), position.filter(keep)
            m = batch.num_rows
            columns = {"project": pa.array(np.full(m, project, object), pa.string()),
                       "model": pa.array(np.full(m, model, object), pa.string()),
                       **{c: batch.column(c) for c in self.filter_stored}}
            names = [c for c in self.schema.names if c in columns]
            probe = pa.RecordBatch.from_arrays([*(columns[c] for c in names), position],
                                               schema=pa.schema([*(self.schema.field(c) for c in names),
                                                                 pa.field("_offset", pa.int64())]))
            offsets.extend(probe.filter(self.filter).column("_offset").to_pylist())
        return offsets, seen

    def rows_out(self, rows: pa.Table) -> Iterator[pa.RecordBatch]:
        """In-memory `rows` (project, model and the stored columns the output and filter name)
        filtered and shaped as the scan's output."""
        if self.filter is not None:
            rows = rows.filter(self.filter)
        if not self.out.names:
            yield pa.RecordBatch.from_pydict({"_": pa.nulls(rows.num_rows)}).select([])  # count(*)
            return
        rows = rows.select(self.out.names)
        yield from (rows if rows.schema.equals(self.out) else rows.cast(self.out)).to_batches()

    def batches(self, key: str, reader: Any, committed: pa.Array | None) -> Iterator[pa.RecordBatch]:
        project, model = key.split("/")
        for batch in reader:
            if committed is not None:
                keep = visible_mask(batch.column("write_id"), committed)
                if keep is not None:  # filtering copies every column: only when needed
                    batch = batch.filter(keep)
            n = batch.num_rows
            constant = {"project": pa.array(np.full(n, project, object), pa.string()) if n else pa.nulls(0, pa.string()),
                        "model": pa.array(np.full(n, model, object), pa.string()) if n else pa.nulls(0, pa.string())}
            if self.in_arrow:
                batch = pa.RecordBatch.from_arrays(
                    [constant[c] if c in RUN_COLUMNS else batch.column(c) for c in self.arrow_schema.names],
                    schema=self.arrow_schema).filter(self.filter)
                n = batch.num_rows
            if not self.out.names:
                yield pa.RecordBatch.from_pydict({"_": pa.nulls(n)}).select([])  # count(*): rows, no columns
            else:
                yield pa.RecordBatch.from_arrays(
                    [constant[c] if c in RUN_COLUMNS and not self.in_arrow else batch.column(c)
                     for c in self.out.names], schema=self.out)


class Scanner:
    """What DuckDB takes from `scanner()`: a reader pulled in the caller's thread. Not
    `pads.Scanner.from_batches`: that reads ahead on pyarrow's I/O threads, which then may sit in
    a Lance scan when the query has returned (DuckDB stopped early) and at interpreter exit."""

    def __init__(self, schema: pa.Schema, batches: Iterator[pa.RecordBatch]):
        self.projected_schema = schema
        self._batches = batches

    def to_reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.projected_schema, self._batches)

    def to_table(self) -> pa.Table:
        return self.to_reader().read_all()


class ViewDataset(pads.Dataset):
    """A view over one table of every run: `project`, `model`, then `table`'s columns (without the
    internal write_id and commit_seq). Rows of the log-written tables (and of `logs` itself: the
    first committed row of each log_id) pass only when the query's pinned logs name their
    write_id."""

    def __init__(self, table: str, schema: pa.Schema, current: Callable[[], Query]):
        self._table = table
        self._schema = with_run_columns(schema)
        self._current = current

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def scanner(self, columns: Sequence[str] | None = None, filter: Any = None, **kwargs: Any) -> Any:
        query = self._current()
        scan = Scan(query, self._schema, columns, filter)
        keys = pruned(query.keys(), filter, self._schema)
        pooled = pool_scan.share(query, self._table, keys) if self._table in GATED else None
        if pooled is not None:  # small runs at their pool copy's logs version: one scan for all
            keys = [k for k in keys if k not in pooled.keys]

        tails: list[tuple[str, pa.Table]] = []  # the runs' unfolded rows, filtered together at the end
        smalls: list[tuple[str, pa.Table]] = []  # the runs' small tables (`small_tables`), the same way

        @functools.cache
        def tail_columns() -> list[str]:  # what an unfolded tail is filtered on (once per scan)
            named = [] if filter is None else [c for c in _filter_columns(filter, self._schema)
                                               if c not in RUN_COLUMNS]
            return list(dict.fromkeys([*scan.stored, *named]))

        gated = self._table in (*GATED, "logs")  # logs: the first committed row of each log_id

        def prepare(key: str) -> None:
            """What a run's scan reads before its rows (opens, the gate, a journal's unfolded rows),
            on the prefetch threads: Lance reads in parallel, without the GIL."""
            snapshot = query.snapshot(key)
            if snapshot.dataset(self._table) is not None and gated:
                snapshot.gate(self._table)
            if self._table in GATED:
                snapshot.tail(self._table)

        def run_batches(key: str, prepared: Future | None) -> Iterator[pa.RecordBatch]:
            if prepared is not None:
                prepared.result()  # raises what the prefetch raised, inside this run's guard
            snapshot = query.snapshot(key)
            ds = snapshot.dataset(self._table)
            if ds is None:
                snapshot.check_missing(self._table)
            lance_filter = None if scan.in_arrow else filter
            if ds is not None:
                committed = snapshot.gate(self._table) if gated else None
                fetched = False
                if scan.filter_stored:
                    narrow = scan.filter_stored if committed is None else [*scan.filter_stored, "write_id"]
                    reader = query.track(ds.scanner(columns=list(dict.fromkeys(narrow)), scan_in_order=True).to_reader())
                    offsets, seen = scan.matching_offsets(key, reader, committed)
                    if len(offsets) <= FETCH_AT_MOST * seen:
                        fetched = True
                        if offsets:
                            yield from scan.batches(key, ds.take(offsets, columns=scan.stored).to_batches(), None)
                if not fetched:
                    stored = scan.stored if committed is None else list(dict.fromkeys([*scan.stored, "write_id"]))
                    rows = small_tables.read(snapshot.run.table_location(self._table).uri, ds,
                                             list(dict.fromkeys([*stored, *tail_columns()])))
                    if rows is not None:  # a small table: read whole (or kept), filtered with the others at the end
                        keep = None if committed is None else visible_mask(rows["write_id"], committed)
                        smalls.append((key, (rows if keep is None else rows.filter(keep)).select(tail_columns())))
                    else:
                        reader = query.track(ds.scanner(columns=stored, filter=lance_filter, **kwargs).to_reader())
                        yield from scan.batches(key, reader, committed)
            tail = snapshot.tail(self._table) if self._table in GATED else None
            if tail is not None and tail.num_rows:  # a journal run's logs not folded yet
                tails.append((key, tail.select(tail_columns())))

        def chained() -> Iterator[pa.RecordBatch]:
            pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="artstore-prefetch") if len(keys) > 1 \
                else None
            try:
                if pooled is not None:
                    yield from query.noting(pooled.batches(query, scan.out, filter, [] if filter is None else
                                                           _filter_columns(filter, self._schema)))
                futures = [pool.submit(prepare, key) for key in keys] if pool is not None else [None] * len(keys)
                for key, prepared in zip(keys, futures, strict=True):
                    yield from query.guard(self._table, key, run_batches(key, prepared))
            finally:
                if pool is not None:  # DuckDB may stop early (a LIMIT): drop what was not started
                    pool.shutdown(wait=True, cancel_futures=True)
            for parts in (tails, smalls):  # in memory: one filter over every run's (one per run cost ~1 ms)
                if parts:
                    yield from scan.rows_out(small_tables.with_runs(parts))

        return Scanner(scan.out, query.track(chained()))

    def to_table(self, columns: Sequence[str] | None = None, filter: Any = None, **kwargs: Any) -> pa.Table:
        return self.scanner(columns, filter, **kwargs).to_table()

    def count_rows(self, filter: Any = None, **kwargs: Any) -> int:
        return self.to_table(columns=[], filter=filter).num_rows


def current_query(get: Callable[[], Query | None]) -> Callable[[], Query]:
    def current() -> Query:
        query = get()
        if query is None:
            raise SqlError("a view was scanned outside Store.sql")
        return query
    return current


