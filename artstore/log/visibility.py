"""Visibility: which rows of the log-written tables a reader sees (the all-or-nothing rule).

A log call appends its rows to `trajectories`, `groups` and `metrics` (the gated tables), each
row carrying the call's `write_id`, and only then commits its one row to `logs` (see `writer`).
A gated row is visible when the committed logs name its `write_id`; rows of a crashed call, of one
still in flight, or of the loser of a duplicate `log_id` race stay invisible.

Matching every row's `write_id` (a 32-character string) against the committed logs costs most
of a large scan, so it is skipped when row counts prove it cannot remove anything: each committed
logs row records how many rows its call wrote to each gated table (`num_trajectories`,
`num_groups`, `num_metrics`), and data rows are committed before their logs row. So a gated table
opened *after* the logs were pinned, at its latest version, holds every row the pinned logs name
plus possibly others; when its row count equals the sum of the committed counts, there are no
others and every row is visible. artstore never deletes rows of a gated table, which this needs.

Both readers use this module: `Run.read_table` (store.py) and the SQL views (scan.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import StorageError
from artstore.log import journal
from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, failures, keys

GATED = ("trajectories", "groups", "metrics")  # rows visible only through a committed logs row
ROW_COUNTS = journal.ROW_COUNTS
GATE_COLUMNS = ["write_id", keys.SEQ, *ROW_COUNTS.values()]  # what a reader needs of the committed logs


def committed_logs(loc: Location, logs: Any, columns: list[str] | None = None, upto: int | None = None) -> pa.Table:
    """The committed log calls, one row each, read from `logs` (the Lance dataset of a run's logs
    table at `loc`, at one version): `columns` of them (all but a journal's payloads when None),
    in commit order, `commit_seq` filled in (each row's sequence). A journal's rows come back
    marked as such (`journal.marked`), so readers of the data tables know where rows are.

    Every reader's notion of "the committed logs rows" is this function: the first committed row
    of each `log_id` (racing attempts of one log may both append; see `writer`). `upto`: the
    logs of an older version read from a later one (`version_map.Pinned.upto`)."""
    schema = logs.schema  # a Lance dataset's schema is converted again at every access (~0.05 ms)
    check_logs_schema(loc, logs, schema)
    is_journal = journal.is_journal(schema)
    if columns is None:  # never the payloads: `journal` reads those of the logs it needs
        columns = journal.log_columns()
    found = keys.first_per_key(loc, logs, "log_id", columns=[c for c in columns if c in schema.names],
                                 upto=upto)
    if keys.SEQ in columns and keys.SEQ not in found.column_names:  # a logs table made before commit_seq
        found = found.append_column(arrow_schema("logs").field(keys.SEQ), pa.nulls(found.num_rows, pa.int64()))
        found = found.select(columns)
    return journal.mark(found) if is_journal else found


def expected_rows(table: str, committed: pa.Table) -> int:
    """How many rows of gated `table` the `committed` log calls wrote (0 for other tables)."""
    if table not in ROW_COUNTS or ROW_COUNTS[table] not in committed.column_names:
        return 0
    return pc.sum(committed[ROW_COUNTS[table]]).as_py() or 0


def check_present(loc: Location, table: str, committed: pa.Table, rows: int | None) -> None:
    """StorageError naming `table` when the committed logs name rows of it that it cannot hold:
    the table is missing (`rows` None) or, opened at its latest version after the logs were read,
    has fewer rows than they wrote. A damaged store, never an empty one."""
    if journal.marked(committed):
        return  # a journal run's rows may still be in its logs table: `Run.validate` counts them all
    want = expected_rows(table, committed)
    if want and (rows is None or rows < want):
        found = "is missing or cannot be opened" if rows is None else f"holds {rows} rows"
        raise StorageError(f"{loc.uri} {found}, but the run's committed logs name {want} rows of it: the store is "
                           "damaged (files deleted or overwritten). Restore the run from a copy; "
                           "`artstore validate` checks every run.")


def check_logs_schema(loc: Location, logs: Any, schema: pa.Schema | None = None) -> None:
    """StorageError when the logs dataset at `loc` opened without the logs columns (its newest
    manifest overwritten, e.g. zero-filled): readers would fail with a bare KeyError."""
    names = (logs.schema if schema is None else schema).names
    missing = [c for c in ("log_id", "write_id") if c not in names]
    if missing:
        raise StorageError(f"{loc.uri} opened without its columns {missing}: its newest manifest is damaged. "
                           "Restore the run from a copy, or read an older version (as_of=).")


def all_visible(table: str, committed: pa.Table, rows: int) -> bool:
    """Whether every one of the `rows` rows of gated `table` is visible to `committed` (rows of
    the logs table holding the count columns), proven by counts alone.

    Valid only for a table opened at its latest version after `committed` was read (so it holds
    every row those logs name); a table opened at an older version must be filtered."""
    if table not in ROW_COUNTS:
        return False  # not gated by counts (e.g. logs itself): match write_ids
    return rows == (pc.sum(committed[ROW_COUNTS[table]]).as_py() or 0)


def visible_mask(write_ids: pa.Array | pa.ChunkedArray, committed_ids: pa.Array) -> pa.Array | None:
    """Which rows of a batch are visible (their write_id is committed); None when all are."""
    keep = pc.is_in(write_ids, value_set=committed_ids)
    return None if pc.all(keep).as_py() else keep


def read_visible(loc: Location, table: str, committed: pa.Table, *, filter: str | None = None,
                 columns: list[str] | None = None) -> pa.Table:
    """The rows of gated `table` (at `loc`, opened now: after `committed` was read) written by
    the `committed` log calls (logs rows sorted as `Run.logs()`), in that order; each call's rows
    in the order it wrote them (a stable sort: they stay together and in order through compaction).

    When `all_visible` holds and no two committed calls share a `recorded_at`, the rows are
    ordered by their own `recorded_at` and no `write_id` is read; otherwise each row's `write_id`
    is matched against `committed`."""
    if journal.marked(committed) and table in GATED:
        return journal.read_rows(loc, table, committed, filter=filter, columns=columns)
    ds = datasets.open_dataset(loc)
    if ds is None:
        check_present(loc, table, committed, None)
        empty = arrow_schema(table).empty_table()
        return empty if columns is None else empty.select(columns)
    with failures.storage_errors(loc, "read"):
        rows = ds.count_rows()
        check_present(loc, table, committed, rows)
        if all_visible(table, committed, rows) and \
                pc.count_distinct(committed["recorded_at"]).as_py() == committed.num_rows:
            cols = None if columns is None else list(dict.fromkeys([*columns, "recorded_at"]))
            data = ds.to_table(columns=cols, filter=filter)
            at = data["recorded_at"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
            if len(at) > 1 and not bool(np.all(at[1:] >= at[:-1])):
                data = data.take(pc.sort_indices(data["recorded_at"]))  # stable
            return data if columns is None else data.select(columns)
        cols = None if columns is None else list(dict.fromkeys([*columns, "write_id"]))
        data = ds.to_table(columns=cols, filter=filter)
    position = pc.index_in(data["write_id"], value_set=committed["write_id"])
    visible = data.filter(pc.is_valid(position)).take(pc.sort_indices(position.drop_null()))
    return visible if columns is None else visible.select(columns)
