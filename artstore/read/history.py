"""History: a run's metric values in long form (`Run.metrics`) and wide, one row per log call
(`Run.history`, as ART's history.jsonl).

Both are made from committed logs rows (`run_logs`). A journal's rows hold their metric names
and values, so they are read from nothing else; older runs read the metrics table's visible rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import journal
from artstore.read import run_logs
from artstore.records.metric_names import with_current_names
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


def extended(history: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table, pa.Table], pa.Table | None]:
    """`history` of some logs followed by more: `history(first)` and `history(more)` joined
    (a metric new in `more` is a column after the others, null before: as `history` of all orders
    them, by first appearance). None when a column name repeats (a metric named `step`)."""
    def extend(before: pa.Table, more: pa.Table) -> pa.Table | None:
        if more.num_rows == 0:
            return before
        after = history(more)
        if len(set(before.column_names)) < before.num_columns or len(set(after.column_names)) < after.num_columns:
            return None
        joined = pa.concat_tables([before, after], promote_options="default")
        return joined.combine_chunks() if joined.column(0).num_chunks > 64 else joined
    return extend
