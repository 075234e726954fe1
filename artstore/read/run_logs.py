"""Run logs: a run's committed log calls, at its latest version or as of one, and the rows of its
log-written tables (trajectories, groups, metrics) that they make visible.

Readers see only rows of committed log calls (`artstore.log.visibility`), so every read of a run
starts here: `Run.logs`, `Run.read_table` and the reads built on them delegate to this module.
`as_of` takes a version of the run (its `logs` table version), a tag, or a datetime.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import RunNotFoundError, StorageError
from artstore.log import journal
from artstore.log.visibility import committed_logs, read_visible
from artstore.names import check_segment, sql_quote
from artstore.read import latest_logs
from artstore.read.as_of import AsOf, as_of_args
from artstore.records.numbers import as_int64
from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, failures, tags


def committed(run: Location, as_of: AsOf = None, with_metrics: bool = False, name: str = "") -> pa.Table:
    """`Run.logs()` of the run at `run`; `with_metrics`: a journal's rows also hold their metric
    names and values. RunNotFoundError (naming the run as `name`) when `as_of` is given and the
    run has no logs."""
    logs_loc = run.child("logs.lance")
    if as_of is None and (snapshot := latest_logs.latest(logs_loc)) is not None:
        # the latest version, kept in memory (`latest_logs`): one manifest read when unchanged
        found = snapshot.committed
        return found if with_metrics else found.select([c for c in journal.log_columns() if c in found.column_names])
    version, asof = as_of_args(as_of)
    for attempt in range(failures.VANISHED_RETRIES + 1):
        pinned = tags.open_version(logs_loc, version, asof)  # a tag: the point it names
        if pinned is None:
            if as_of is not None and not datasets.exists(logs_loc):
                raise RunNotFoundError(f"no run {name}")
            return arrow_schema("logs").empty_table().select(journal.log_columns())
        columns = journal.log_columns()
        if with_metrics and journal.is_journal(pinned.dataset.schema):
            columns = [*columns, "metric_names", "metric_values"]
        try:
            found = committed_logs(logs_loc, pinned.dataset, columns, upto=pinned.upto)
        except StorageError as e:  # a cleanup removed files of the version opened: open it again
            if attempt == failures.VANISHED_RETRIES or not failures.vanished(e):
                raise
            continue
        return found.sort_by(latest_logs.ORDER)
    raise AssertionError("unreachable")


def visible(run: Location, table: str, committed: pa.Table, *, filter: str | None = None,
            columns: list[str] | None = None) -> pa.Table:
    """Rows of `table` of the run at `run` written by the `committed` log calls (rows of the logs
    table, in the order of `Run.logs()`), in that order (see `visibility.read_visible`). The table
    is opened at its latest version; when a cleanup removed its files meanwhile (after a
    compaction, outside the reader window), it is opened again."""
    for attempt in range(failures.VANISHED_RETRIES + 1):
        try:
            return read_visible(run.child(f"{table}.lance"), table, committed, filter=filter, columns=columns)
        except StorageError as e:
            if attempt == failures.VANISHED_RETRIES or not failures.vanished(e):
                raise
    raise AssertionError("unreachable")


def where(split: str | None, step: int | None) -> str | None:
    """The Lance SQL filter of rows logged at `split` and `step` (None: any)."""
    parts = []
    if split is not None:
        parts.append(f"split = {sql_quote(check_segment('split', split))}")
    if step is not None:
        parts.append(f"step = {as_int64('step', step)}")
    return " AND ".join(parts) or None


def log_mask(committed: pa.Table, split: str | None, step: int | None) -> pa.ChunkedArray:
    """Which `committed` logs were logged at `split` and `step` (None: any)."""
    mask = pc.equal(committed["step"], as_int64("step", step)) if step is not None else \
        pa.chunked_array([pa.array([True] * committed.num_rows, pa.bool_())])
    if split is not None:
        mask = pc.and_(mask, pc.equal(committed["split"], check_segment("split", split)))
    return mask
