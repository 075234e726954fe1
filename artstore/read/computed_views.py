"""The views whose rows are computed per run in Python, with columns that depend on the data:
`history` (`Run.history()` of every run, one column per metric name) and `tokens` (each run's
tokens table, columns by name). Registered with the columns last seen; a scan that finds others
raises `view_datasets.SchemaChanged`, and `sql` registers the new columns and runs the query again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from artstore.read.query import Query
from artstore.read.view_datasets import (
    RUN_COLUMNS,
    RUN_FIELDS,
    Scan,
    Scanner,
    SchemaChanged,
    pruned,
    unique_names,
)
from artstore.schema import arrow_schema

HISTORY_FIXED = ("project", "model", "step", "recorded_at")


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
        scan = Scan(query, self._schema, columns, filter)
        keys = pruned(query.keys(), filter, self._schema)

        def chained() -> Iterator[pa.RecordBatch]:
            for key in keys:
                table = self._rows(query, key)
                if table is None or not table.num_rows:
                    continue
                part = pa.table({c: table[c] if c in table.column_names else pa.nulls(table.num_rows, f.type)
                                 for c, f in zip(self._schema.names, self._schema, strict=True)
                                 if c not in RUN_COLUMNS})
                if filter is not None and not scan.in_arrow:  # (else `batches` applies it) pushed down by
                    part = part.filter(filter)  # DuckDB, which does not apply it again: here, not in Lance
                yield from scan.batches(key, part.select(scan.stored).to_batches(), None)

        return Scanner(scan.out, query.track(query.noting(chained())))

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
        # a tag reads its point whether or not the version is still kept (`artstore.storage.tags`)
        as_of = snapshot.as_of if isinstance(snapshot.as_of, str) else snapshot.read["logs"]
        return snapshot.run.history(as_of=as_of)
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
    return pa.schema([*RUN_FIELDS, pa.field("step", pa.int64()), arrow_schema("logs").field("recorded_at"),
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
        return None if not fields else pa.schema([*RUN_FIELDS, *fields.values()])
    return query.cached(("tokens-columns",), compute)


def tokens_rows(query: Query, key: str) -> pa.Table | None:
    ds = query.snapshot(key).dataset("tokens")
    return None if ds is None else ds.to_table()


