"""Groups: `Run.groups`, the trajectory groups a run logged, decoded equal to what was logged.

One step's groups at the latest version come from the kept logs (`latest_logs`): their journal
rows are taken by row address, and only a log whose payload was dropped (folded) is read from
the tables' fragments holding it, so the cost does not grow with the run; this process's group
logs of the step not committed yet come from their queued journal rows, without waiting for their
commit. Any other read (all steps, or `as_of`) reads the visible rows of the groups and
trajectories tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from artstore.errors import StorageError
from artstore.log import journal
from artstore.read import latest_logs, run_logs
from artstore.read.as_of import AsOf
from artstore.storage import Location, failures

if TYPE_CHECKING:
    from artstore.records.trajectory import TrajectoryGroup


def _now(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """`fn(*args, **kwargs)` run here, as a done future (what `_reader().submit` gives)."""
    done: Future = Future()
    try:
        done.set_result(fn(*args, **kwargs))
    except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
        done.set_exception(e)
    return done


@functools.cache
def _reader() -> ThreadPoolExecutor:
    """A thread for a read beside the caller's (starting one costs ~1 ms)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="artstore-read")


def read_groups(run: Location, split: str | None, step: int | None, as_of: AsOf,
                logs: Callable[[AsOf], pa.Table]) -> list[TrajectoryGroup]:
    """The groups of the run at `run` logged at `split` and `step` (None: any), as of `as_of`;
    ordered by step, split, then position. `logs(as_of)`: the run's committed logs (`Run.logs`)."""
    # Imported here: the records (with openai's message types) cost ~1 s to import, which
    # readers of tables and SQL (and the command line) need not pay.
    from artstore.records.encoding import DECODE_COLUMNS, check_stored_layout, decode_groups

    where = run_logs.where(split, step)
    found = latest_logs.latest_of_step(run.child("logs.lance"), split, step) \
        if as_of is None and step is not None else None
    if found is not None and found[0].is_journal:
        snapshot, queued = found
        # A log's rows carry its own split and step (`commit.write_log`), so no row is filtered.
        committed = snapshot.committed.filter(run_logs.log_mask(snapshot.committed, split, step))
        journal_rows = snapshot.payloads(committed["write_id"].to_pylist(), journal.PAYLOAD_READ_COLUMNS)
        in_tables = any(journal.payloads_dropped(t, journal_rows) for t in ("trajectories", "groups"))
        if queued:  # this process's logs of the step not committed yet: their rows as they are, after
            journal_rows = pa.concat_tables([journal_rows, *(
                row.select(journal.PAYLOAD_READ_COLUMNS).cast(journal_rows.schema) for _, row in queued)])
            committed = pa.table({"write_id": pa.array(
                [*committed["write_id"].to_pylist(), *(r.write_id for r, _ in queued)], pa.string())})
        for attempt in range(failures.VANISHED_RETRIES + 1):
            # Lance releases the GIL: reads of the two tables overlap (decoding payloads alone does not)
            pending = (_reader().submit if in_tables else _now)(
                journal.rows_of_few, run.child("trajectories.lance"), "trajectories", committed, journal_rows,
                columns=list(DECODE_COLUMNS), open_table=snapshot.table)
            try:
                grp = journal.rows_of_few(run.child("groups.lance"), "groups", committed, journal_rows,
                                          open_table=snapshot.table)
                traj = pending.result()
                break
            except StorageError as e:
                if attempt < failures.VANISHED_RETRIES and failures.vanished(e):
                    snapshot.forget_tables()  # a cleanup removed files of the versions opened
                    continue
                check_stored_layout(run.child("trajectories.lance"))  # a version 1 table: say so
                raise
    else:
        committed = logs(as_of)
        # Both tables are opened after `committed` was read (visibility needs that); Lance releases
        # the GIL, so the two scans overlap (~3 ms of ~35 ms at 512 trajectories).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(run_logs.visible, run, "trajectories", committed, filter=where,
                                  columns=list(DECODE_COLUMNS))
            grp = run_logs.visible(run, "groups", committed, filter=where)
            try:
                traj = pending.result()
            except StorageError:
                check_stored_layout(run.child("trajectories.lance"))  # a version 1 table: say so
                raise
    order = {w: i for i, w in enumerate(committed["write_id"].to_pylist())}
    keys = [(s, sp, order[w], gi) for s, sp, w, gi in zip(
        grp["step"].to_pylist(), grp["split"].to_pylist(), grp["write_id"].to_pylist(),
        grp["group_index"].to_pylist(), strict=True)]
    grp = grp.take(pa.array(sorted(range(len(keys)), key=keys.__getitem__), pa.int64()))  # typed when empty
    return decode_groups(grp, traj)
