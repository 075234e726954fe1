"""Logs of runs whose logs table predates the journal: each log commits its rows to every data
table it has rows for (one commit each), then its logs row (a plain append when the table has
`commit_seq`, first commit wins; a merge_insert for the oldest layout). New runs never take this
path (`artstore.log.commit` writes one journal row); it keeps stores written before it working.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pyarrow as pa

from artstore.log.visibility import GATE_COLUMNS, check_present, committed_logs
from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, keys, writes


def commit_tables(run: Location, pool: ThreadPoolExecutor, rows: Mapping[str, pa.Table], message: str) -> dict[str, int]:
    """A run whose logs table predates the journal: write and commit the log's rows to each data
    table (one commit each); the table versions made."""
    written = {name: pool.submit(writes.write_files, run.child(f"{name}.lance"), t) for name, t in rows.items()}
    commits = {name: pool.submit(writes.commit_files, run.child(f"{name}.lance"), future.result(),
                                 rows[name].schema, message,
                                 before_create=functools.partial(refuse_recreate, run, name))
               for name, future in written.items()}
    return {name: future.result() for name, future in commits.items()}


def table_rows(traj: pa.Table, grp: pa.Table, values: Mapping[str, float], log_id: str, write_id: str,
               split: str, step: int, recorded_at: datetime) -> dict[str, pa.Table]:
    """The log's rows of each data table that gets any, for a run whose logs predate the journal."""
    n = len(values)
    metric_rows = pa.table({
        "log_id": [log_id] * n, "write_id": [write_id] * n, "step": [step] * n, "split": [split] * n,
        "name": list(values), "value": list(values.values()), "recorded_at": [recorded_at] * n,
    }, schema=arrow_schema("metrics"))
    return {name: t for name, t in (("trajectories", traj), ("groups", grp), ("metrics", metric_rows)) if t.num_rows}


def refuse_recreate(run: Location, table: str) -> None:
    """StorageError when `table` is about to be created although the run's committed logs name
    rows of it (its files were deleted): a new table would hide the damage."""
    logs_loc = run.child("logs.lance")
    logs = datasets.open_dataset(logs_loc)
    if logs is not None:
        check_present(run.child(f"{table}.lance"), table, committed_logs(logs_loc, logs, GATE_COLUMNS), None)


def commit_log(run: Location, row: pa.Table, first_commit_wins: bool, read_version: int = 0) -> tuple[bool, int]:
    """Append the logs row `row` (one commit, on `read_version` when the caller just read the
    logs at it: see `writes.commit_files`); returns (appended, version). A logs table made before
    first-commit-wins keeps its merge_insert, which appends nothing when the id is there."""
    loc = run.child("logs.lance")
    if first_commit_wins:
        return True, writes.append(loc, row, f"log {row['log_id'][0]}", read_version=read_version or None)
    return writes.insert_unique(loc, row.drop_columns([keys.SEQ]), "log_id")
