"""The Arrow datasets behind the SQL views: one per view, spanning every run a query may read.

`artstore.read.sql` registers each of these with DuckDB under the view's own name (`trajectories`,
`logs`, ...): there are no per-run tables or other internal names a query could reach. DuckDB reads
a dataset's `schema` to bind a query and calls `scanner(columns=, filter=)` to run it; the scan
then
- lists the query's runs (once per query, `Query.keys`), and keeps those whose constant `project`
  and `model` can satisfy the filter. pyarrow decides that, as it prunes the partitions of a
  partitioned dataset (`_pruned`), so the runs left out are exactly those the filter rules out, for
  any query shape: pruned runs' tables are never opened;
- scans each kept run's Lance table (`RunSnapshot`: logs pinned first, visibility gate), pushing
  the filter and columns into Lance when the filter does not name `project` or `model`, and
  otherwise applying it in Arrow after adding those two columns;
- registers every reader it opens with the query, which closes them when the query ends, even when
  DuckDB stopped early (a LIMIT): a Lance reader left open until interpreter exit can hang or abort
  the exit while pyarrow's thread pool shuts down.

`history` and `tokens` have columns that depend on the data (metric names; each run's tokens
columns). Their datasets are registered with the columns last seen; a scan that finds others
raises `SchemaChanged`, and `sql` registers the new columns and runs the query again (once).
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
from artstore.read import small_tables
from artstore.read.scan import Query
from artstore.schema import arrow_schema

RUN_COLUMNS = ("project", "model")
# A filter naming project/model runs in Arrow. When it also names stored columns, those are read
# first, alone; if at most this share of the rows match, only theirs are fetched whole (`take`).
FETCH_AT_MOST = 0.1
# Runs whose opens and gates are read ahead, in parallel, while DuckDB consumes earlier runs' rows.
PREFETCH_THREADS = 4
HISTORY_FIXED = ("project", "model", "step", "recorded_at")
_RUN_FIELDS = [pa.field("project", pa.string()), pa.field("model", pa.string())]


class SchemaChanged(Exception):  # noqa: N818 - a signal to rebind, not an error the user sees
    """A data-dependent view (history, tokens) has other columns than DuckDB bound: rebind, rerun."""

    def __init__(self, view: str, schema: pa.Schema | None):
        super().__init__(view)
        self.view, self.schema = view, schema


def with_run_columns(schema: pa.Schema) -> pa.Schema:
    return pa.schema([*_RUN_FIELDS, *schema])


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


def _pruned(keys: list[str], filter: Any, schema: pa.Schema) -> list[str]:
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


class _Scan:
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


class _Scanner:
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
        scan = _Scan(query, self._schema, columns, filter)
        keys = _pruned(query.keys(), filter, self._schema)

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
                futures = [pool.submit(prepare, key) for key in keys] if pool is not None else [None] * len(keys)
                for key, prepared in zip(keys, futures, strict=True):
                    yield from query.guard(self._table, key, run_batches(key, prepared))
            finally:
                if pool is not None:  # DuckDB may stop early (a LIMIT): drop what was not started
                    pool.shutdown(wait=True, cancel_futures=True)
            for parts in (tails, smalls):  # in memory: one filter over every run's (one per run cost ~1 ms)
                if parts:
                    yield from scan.rows_out(small_tables.with_runs(parts))

        return _Scanner(scan.out, query.track(chained()))

    def to_table(self, columns: Sequence[str] | None = None, filter: Any = None, **kwargs: Any) -> pa.Table:
        return self.scanner(columns, filter, **kwargs).to_table()

    def count_rows(self, filter: Any = None, **kwargs: Any) -> int:
        return self.to_table(columns=[], filter=filter).num_rows


class ComputedDataset(pads.Dataset):
    """A view whose rows are computed per run in Python (`rows(query, key)` -> a table, or None
    when the run has none) and whose columns depend on the data (`columns(query)`, the schema of
    every run's rows together). Registered with the columns last seen: a scan that finds others
    raises SchemaChanged."""

    def __init__(self, view: str, schema: pa.Schema, current: Callable[[], Query],
                 columns: Callable[[Query], pa.Schema | None], rows: Callable[[Query, str], pa.Table | None]):
        self._view, self._schema, self._current = view, schema, current
        self._columns, self._rows = columns, rows

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def scanner(self, columns: Sequence[str] | None = None, filter: Any = None, **kwargs: Any) -> Any:
        query = self._current()
        found = self._columns(query)
        if found is None or not found.equals(self._schema):
            query.error = SchemaChanged(self._view, found)  # DuckDB re-raises it as its own error
            raise query.error
        scan = _Scan(query, self._schema, columns, filter)
        keys = _pruned(query.keys(), filter, self._schema)

        def chained() -> Iterator[pa.RecordBatch]:
            for key in keys:
                table = self._rows(query, key)
                if table is None or not table.num_rows:
                    continue
                part = pa.table({c: table[c] if c in table.column_names else pa.nulls(table.num_rows, f.type)
                                 for c, f in zip(self._schema.names, self._schema, strict=True)
                                 if c not in RUN_COLUMNS})
                yield from scan.batches(key, part.select(scan.stored).to_batches(), None)

        return _Scanner(scan.out, query.track(chained()))

    def to_table(self, columns: Sequence[str] | None = None, filter: Any = None, **kwargs: Any) -> pa.Table:
        return self.scanner(columns, filter, **kwargs).to_table()

    def count_rows(self, filter: Any = None, **kwargs: Any) -> int:
        return self.to_table(columns=[], filter=filter).num_rows


# -- history: Run.history() of every run, with the project and model in front --------------------
def run_history(query: Query, key: str) -> pa.Table | None:
    """`Run.history()` of the run `key` at the query's pinned logs version (None: no logs then).
    Kept for the query."""
    def compute() -> pa.Table | None:
        snapshot = query.snapshot(key)
        if snapshot.dataset("logs") is None:
            return None
        snapshot.dataset("metrics")  # recorded in the versions read
        return snapshot.run.history(as_of=snapshot.read["logs"])
    return query.cached(("history", key), compute)


def _history_names(query: Query) -> dict[str, str]:
    """{metric name: its column in the view}, names in order of first appearance (runs in name
    order), each made unique ignoring case (`unique_names`: DuckDB's names are not case-sensitive,
    and `project`, `model`, `step`, `recorded_at` come first)."""
    def compute() -> dict[str, str]:
        names: dict[str, None] = {}
        for key in query.keys():
            h = run_history(query, key)
            if h is not None:
                names.update(dict.fromkeys(h.column_names[2:]))
        return dict(zip(names, unique_names([*HISTORY_FIXED, *names])[len(HISTORY_FIXED):], strict=True))
    return query.cached(("history-names",), compute)


def history_columns(query: Query) -> pa.Schema:
    """project, model, step, recorded_at, then one float64 per metric name (`_history_names`)."""
    return pa.schema([*_RUN_FIELDS, pa.field("step", pa.int64()), arrow_schema("logs").field("recorded_at"),
                      *(pa.field(c, pa.float64()) for c in _history_names(query).values())])


def history_rows(query: Query, key: str) -> pa.Table | None:
    h = run_history(query, key)
    if h is None:
        return None
    columns = _history_names(query)
    names = ["step", "recorded_at", *(columns[n] for n in h.column_names[2:])]
    return pa.Table.from_arrays(h.columns, names=names)


# -- tokens: each run's tokens table, columns by name --------------------------------------------
def tokens_columns(query: Query) -> pa.Schema | None:
    """project, model, then the union (by name, first seen first) of the runs' tokens columns;
    None when no run has a tokens table."""
    def compute() -> pa.Schema | None:
        fields: dict[str, pa.Field] = {}
        for key in query.keys():
            ds = query.snapshot(key).dataset("tokens")
            if ds is not None:
                for f in ds.schema:
                    fields.setdefault(f.name, f)
        return None if not fields else pa.schema([*_RUN_FIELDS, *fields.values()])
    return query.cached(("tokens-columns",), compute)


def tokens_rows(query: Query, key: str) -> pa.Table | None:
    ds = query.snapshot(key).dataset("tokens")
    return None if ds is None else ds.to_table()


def current_query(get: Callable[[], Query | None]) -> Callable[[], Query]:
    def current() -> Query:
        query = get()
        if query is None:
            raise SqlError("a view was scanned outside Store.sql")
        return query
    return current


