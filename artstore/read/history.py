"""History: a run's metric values in long form (`Run.metrics`) and wide, one row per log call
(`Run.history`, as ART's history.jsonl).

Both are made from committed logs rows (`run_logs`). A journal's rows hold their metric names
and values, so they are read from nothing else; older runs read the metrics table's visible rows.
At the latest version the history is kept per version of the run (`latest`) and extended by the
logs committed since (`extended`: a few rows, made in Python, where Arrow's fixed cost per call
dominates), and by this process's group logs not committed yet, as records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import journal
from artstore.read import latest_logs, run_logs
from artstore.records.metric_names import current_name, with_current_names
from artstore.storage import Location

LONG_COLUMNS = ["log_id", "step", "split", "name", "value", "recorded_at"]


def metrics(run: Location, committed: pa.Table) -> pa.Table:
    """Every metric value of the `committed` logs of the run at `run` (long form: log_id, step,
    split, name, value, recorded_at), with 0.5.9's names read as 0.5.23's."""
    if "metric_names" in committed.column_names:  # a journal's rows hold their metrics: one read
        long = journal.payload_rows("metrics", committed).select(LONG_COLUMNS)
    else:
        long = run_logs.visible(run, "metrics", committed, columns=LONG_COLUMNS)
    # a read-time mapping: stores are never rewritten
    return with_current_names(long)


def table(logs: pa.Table, long: pa.Table) -> pa.Table:
    """The history of the `logs` (committed logs rows) whose metric values are `long` (`metrics`):
    one row per log, in their order: `step`, `recorded_at` (UTC), then one float64 column per
    metric name, in order of first appearance (null where a row lacks it)."""
    names = pc.unique(long["name"])  # in order of first appearance
    grid = np.full((len(names), logs.num_rows), np.nan)
    present = np.zeros_like(grid, dtype=bool)
    rows = pc.index_in(long["log_id"], value_set=logs["log_id"].combine_chunks()).to_numpy(zero_copy_only=False)
    cols = pc.index_in(long["name"], value_set=names).to_numpy(zero_copy_only=False)
    grid[cols, rows] = long["value"].to_numpy(zero_copy_only=False)
    present[cols, rows] = True
    # from_arrays, not a dict: a metric may be named `step` or `recorded_at` too
    metric_names = names.to_pylist()
    arrays = [pa.array(grid[j], pa.float64(), mask=~present[j]) for j in range(len(metric_names))]
    return pa.Table.from_arrays([logs["step"], logs["recorded_at"], *arrays],
                                names=["step", "recorded_at", *metric_names])


def latest(run: Location, make: Callable[[pa.Table], pa.Table]) -> pa.Table | None:
    """`make(committed logs)` (the history, `table`) of the run at `run` at its latest version,
    kept per version and extended by the logs committed since (`extended`); with this process's
    group logs not committed yet added as they are, without waiting for their commit
    (`latest_logs.beyond`). None when the run's logs are not kept (no logs table, or one from
    before commit_seq): the caller reads them."""
    found = latest_logs.beyond(run.child("logs.lance"))
    if found is None:
        return None
    snapshot, queued = found
    history = snapshot.derive("history", make, extended(make))
    if not queued:
        return history
    return snapshot.derive_beyond("history", tuple(r.write_id for r in queued), lambda: _with_records(
        history, queued) or make(pa.concat_tables([snapshot.committed, _records_table(snapshot.committed, queued)])))


def extended(history: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table, pa.Table], pa.Table | None]:
    """`history` of some logs followed by more: `history(first)` and `history(more)` joined
    (a metric new in `more` is a column after the others, null before: as `history` of all orders
    them, by first appearance). None when a column name repeats (a metric named `step`)."""
    def extend(before: pa.Table, more: pa.Table) -> pa.Table | None:
        if more.num_rows == 0:
            return before
        if "metric_names" in more.column_names and more.num_rows <= _FEW:  # a journal's rows: in Python
            return _joined(before, more["step"], more["recorded_at"],
                           [zip(n or (), v or (), strict=True) for n, v in zip(
                               more["metric_names"].to_pylist(), more["metric_values"].to_pylist(), strict=True)])
        after = history(more)
        if len(set(before.column_names)) < before.num_columns or len(set(after.column_names)) < after.num_columns:
            return None
        joined = pa.concat_tables([before, after], promote_options="default")
        return joined.combine_chunks() if joined.column(0).num_chunks > 64 else joined
    return extend


_FEW = 128  # rows up to which an extension is made in Python (measured: Arrow costs less from ~100 rows on)
_NAMES: dict[str, str] = {}  # stored metric name -> `current_name` of it


def _joined(before: pa.Table, steps: Any, recorded_at: Any, metrics: Sequence[Iterable[tuple[str, Any]]]) -> pa.Table | None:
    """`before` (a history) followed by the history of more logs, one per item of `metrics`
    (each its (stored name, value) pairs), at `steps` and `recorded_at`: `before`'s metric
    columns first (null where a log lacks one), then metrics new in them by first appearance, as
    `table` orders them. None when a column name repeats."""
    names = before.column_names
    if len(set(names)) < len(names):
        return None
    n = len(metrics)
    columns = {name: j for j, name in enumerate(names[2:])}  # metric name -> its column
    at_row: list[int] = []
    at_column: list[int] = []
    values: list[float] = []
    for i, pairs in enumerate(metrics):
        for stored, value in pairs:
            name = _NAMES.get(stored)
            if name is None:
                if len(_NAMES) > 4096:
                    _NAMES.clear()
                name = _NAMES[stored] = current_name(stored)
            j = columns.get(name)
            if j is None:
                if name in ("step", "recorded_at"):
                    return None
                j = columns[name] = len(columns)
            at_row.append(i)
            at_column.append(j)
            values.append(np.nan if value is None else value)  # (a null value reads as NaN, as in `table`)
    grid = np.full((len(columns), n), np.nan)
    absent = np.ones_like(grid, dtype=bool)
    grid[at_column, at_row] = values  # (a name given twice: the last value, as in `table`)
    absent[at_column, at_row] = False
    arrays = [pa.array(grid[j], pa.float64(), mask=absent[j]) for j in range(len(columns))]
    after = pa.Table.from_arrays([steps, recorded_at, *arrays], schema=pa.schema(
        [before.schema.field(0), before.schema.field(1), *(pa.field(name, pa.float64()) for name in columns)]))
    if after.num_columns > before.num_columns:  # new metrics: null in the rows before
        before = pa.Table.from_arrays([*before.columns, *(pa.nulls(before.num_rows, pa.float64())
                                                          for _ in range(after.num_columns - before.num_columns))],
                                      schema=after.schema)
    joined = pa.concat_tables([before, after])
    return joined.combine_chunks() if joined.column(0).num_chunks > 64 else joined


def _with_records(history: pa.Table, records: list[Any]) -> pa.Table | None:
    """`history` followed by the rows of the log `records` (`LogRecord`s, in the order of
    `Run.logs()`, after `history`'s logs); None when a column name repeats."""
    # by position: a metric may be named `step` or `recorded_at` too (its column comes later)
    return _joined(history, pa.array([r.step for r in records], history.schema.field(0).type),
                   pa.array([r.recorded_at for r in records], history.schema.field(1).type),
                   [r.metrics.items() for r in records])


def _records_table(committed: pa.Table, records: list[Any]) -> pa.Table:
    """The log `records` as rows of `committed` (what `table` needs of them)."""
    rows = [{"log_id": r.log_id, "write_id": r.write_id, "split": r.split, "step": r.step,
             "num_groups": r.num_groups, "num_trajectories": r.num_trajectories, "num_exceptions": r.num_exceptions,
             "num_metrics": len(r.metrics), "recorded_at": r.recorded_at, "metric_names": list(r.metrics),
             "metric_values": list(r.metrics.values())} for r in records]
    return pa.Table.from_pylist(rows, schema=committed.schema)
