"""Small tables read whole, and kept: what a cross-run query over many small runs reads.

A run's table of at most SMALL_TABLE rows is read with one take of the columns a query needs, and
the caller filters it in Arrow: a Lance scan's set-up (~1-2 ms of CPU) is most of reading a small
table, and a cross-run query reads one table per run. The columns read are kept per (table,
version, column), at most MAX_BYTES altogether (least recently used out first), so the next query
over the same versions reads none of them again. A version's rows never change; its key holds the
version's commit time too, so a table deleted and written again (its versions start over) is not
taken for the old one. `with_runs` puts runs' in-memory rows (these, and journal rows not folded
yet) into one table, so a query filters every run's at once (one filter per run cost ~1 ms).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pyarrow as pa

SMALL_TABLE = 2048  # rows
MAX_BYTES = 256 << 20

_COLUMNS: OrderedDict[tuple[str, int, str, str], pa.ChunkedArray] = OrderedDict()
_BYTES = 0
_LOCK = threading.Lock()


def read(uri: str, ds: Any, columns: list[str]) -> pa.Table | None:
    """`columns` of every row of `ds` (the Lance dataset of the table at `uri`, at one version), in
    the dataset's order; None when it holds more than SMALL_TABLE rows or no column is asked for
    (a count: the caller scans)."""
    n = ds.count_rows()  # from the manifest
    if n > SMALL_TABLE or not columns:
        return None
    stamp = (uri, ds.version, str(ds.get_version()["timestamp"]))
    with _LOCK:
        found = {c: _COLUMNS.get((*stamp, c)) for c in columns}
        for c, column in found.items():
            if column is not None:
                _COLUMNS.move_to_end((*stamp, c))
    missing = [c for c, column in found.items() if column is None]
    if missing:
        taken = ds.take(list(range(n)), columns=missing) if n else ds.schema.empty_table().select(missing)
        _keep(stamp, taken)
        found.update({c: taken[c] for c in missing})
    return pa.table({c: found[c] for c in columns})


def _keep(stamp: tuple[str, int, str], taken: pa.Table) -> None:
    global _BYTES
    with _LOCK:
        for c in taken.column_names:
            key = (*stamp, c)
            if key not in _COLUMNS and taken[c].nbytes <= MAX_BYTES:
                _COLUMNS[key] = taken[c]
                _BYTES += taken[c].nbytes
        while _BYTES > MAX_BYTES:
            _BYTES -= _COLUMNS.popitem(last=False)[1].nbytes


def with_runs(parts: list[tuple[str, pa.Table]]) -> pa.Table:
    """Runs' in-memory rows (key "project/model", rows; the same columns) as one table, each row
    after its run's `project` and `model`."""
    keys = [k.split("/") for k, _ in parts]
    run = pa.array(np.repeat(np.arange(len(parts)), [t.num_rows for _, t in parts]))
    columns = {"project": pa.array([p for p, _ in keys], pa.string()).take(run),
               "model": pa.array([m for _, m in keys], pa.string()).take(run)}
    if parts[0][1].num_columns:  # none for count(*): the run columns hold the row count
        rows = pa.concat_tables([t for _, t in parts]).combine_chunks()
        columns.update(zip(rows.column_names, rows.columns, strict=True))
    return pa.table(columns)


def clear() -> None:
    """Forget every column kept (tests that watch what is read)."""
    global _BYTES
    with _LOCK:
        _COLUMNS.clear()
        _BYTES = 0
