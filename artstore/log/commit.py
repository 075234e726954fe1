"""The log() commit protocol: all or nothing for every reader, idempotent on retry.

One log call writes its rows to `trajectories`, `groups` and `metrics` tagged with a fresh
`write_id`, then appends one row to `logs` naming its `log_id` and `write_id`. Readers see only
rows whose write_id a committed `logs` row names, so a writer killed at any instant leaves nothing
half-visible. A retry with the same log_id (given, or derived from the content) is stored once:
the writer looks the id up before it commits anything (writing its data files meanwhile, which
no version names until it commits them) and stores nothing when the id is there (it deletes
those files); two attempts racing past that
look-up both append a logs row, and the first committed row of a log_id wins for every reader
(`keys.first_per_key`, by Lance fragment ids and the `commit_seq` column; used by `Run.logs` and
the SQL scans), so the loser's rows stay invisible,
like a crashed write's, and its caller gets the winner's record. A plain append, not a
merge_insert: Lance stores a 16 KiB key filter in each merge_insert's transaction and manifest.

Upkeep runs after the commit (`artstore.log.inline_upkeep`): compaction in the background, or
here when logs outrun it, and cleanup of old versions in the background (`artstore.log.upkeep`).
Runs whose logs table predates the journal commit each data table (`artstore.log.legacy_logs`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from artstore.errors import ArtstoreError, StorageError, ValidationError, VersionNotFoundError
from artstore.log import (
    fold,
    group_commit,
    idle_fold,
    inline_upkeep,
    journal,
    legacy_logs,
    registry,
    upkeep,
)
from artstore.names import check_log_id, check_segment, sql_quote
from artstore.records import metrics as metrics_mod
from artstore.records.encoding import check_stored_layout, encode_groups
from artstore.records.numbers import as_int64
from artstore.records.trajectory import Trajectory, TrajectoryGroup, check_reward
from artstore.schema import arrow_schema
from artstore.storage import (
    Location,
    barrier,
    data_files,
    datasets,
    failures,
    handles,
    keys,
    scans,
    writes,
)

logger = logging.getLogger(__name__)

DATA_TABLES = ("trajectories", "groups", "metrics")
DEFAULT_RETENTION = upkeep.DEFAULT_RETENTION
DEFAULT_READER_WINDOW = upkeep.DEFAULT_READER_WINDOW


@dataclass(frozen=True)
class LogRecord:
    """What one log() call stored. `created` is False when the log_id was already stored."""

    log_id: str
    split: str
    step: int
    num_groups: int
    num_trajectories: int
    num_exceptions: int
    recorded_at: datetime
    metrics: dict[str, float] = field(default_factory=dict)
    created: bool = True
    # the run version it committed (None: none, or not yet: a log `queued` for a group commit gets
    # it once its commit lands, set by the committer; `Model.flush()` waits for that)
    logs_version: int | None = field(default=None, compare=False)
    state_delta_stored: bool = field(default=False, compare=False, repr=False)  # in its journal row (see write_log)
    write_id: str | None = field(default=None, compare=False, repr=False)  # of the row committed (None: a retry's)
    queued: bool = field(default=False, compare=False, repr=False)  # returned before its group commit (`group_commit`)


def as_groups(trajectories: Any) -> list[TrajectoryGroup]:
    """A group, groups, or trajectories (one group) -> a list of groups. Consumes once."""
    if trajectories is None:
        return []
    if isinstance(trajectories, TrajectoryGroup):
        return [trajectories]
    if isinstance(trajectories, Trajectory):
        return [TrajectoryGroup([trajectories])]
    if isinstance(trajectories, (str, bytes, Mapping)) or not isinstance(trajectories, Iterable):
        raise ValidationError("trajectories", f"expected a TrajectoryGroup or a list of them, got {type(trajectories).__name__}")
    items = list(trajectories)
    if all(isinstance(i, TrajectoryGroup) for i in items):
        return items
    if all(isinstance(i, (Trajectory, BaseException)) for i in items):
        return [TrajectoryGroup(items)]
    bad = next(i for i in items if not isinstance(i, (Trajectory, TrajectoryGroup, BaseException)))
    raise ValidationError("trajectories", f"expected TrajectoryGroup or Trajectory items, got {type(bad).__name__}")


def _content_id(split: str, step: int, tables_: Sequence[pa.Table], extra: Mapping[str, float]) -> str:
    h = hashlib.sha256(f"{split}\0{step}\0{sorted(extra.items())!r}".encode())
    for t in tables_:
        content = t.drop_columns([c for c in ("log_id", "write_id", "trajectory_id", "group_id", "recorded_at") if c in t.column_names])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, content.schema) as w:
            w.write_table(content)
        h.update(sink.getvalue())
    return "d-" + h.hexdigest()[:32]


def _set_ids(t: pa.Table, log_id: str) -> pa.Table:
    """`t` (rows of one log, encoded with no log_id) with its log_id, group_id and trajectory_id
    filled in. Built as Python strings: a log has few rows, and compute kernels cost ~4x more here."""
    n, schema = t.num_rows, t.schema
    group_ids = [f"{log_id}:{g}" for g in t["group_index"].to_pylist()]
    t = t.set_column(schema.get_field_index("log_id"), schema.field("log_id"), pa.array([log_id] * n, pa.string()))
    t = t.set_column(schema.get_field_index("group_id"), schema.field("group_id"), pa.array(group_ids, pa.string()))
    if "trajectory_id" in schema.names:
        ids = [f"{g}:{i}" for g, i in zip(group_ids, t["trajectory_index"].to_pylist(), strict=True)]
        t = t.set_column(schema.get_field_index("trajectory_id"), schema.field("trajectory_id"), pa.array(ids, pa.string()))
    return t


def _winner(run: Location, log_id: str, version: int | None = None) -> tuple[dict[str, Any] | None, int, bool, bool]:
    """(the committed logs row of `log_id` or None, the logs version read (0: no table), whether
    the table reads first-commit-wins: False for a logs table made by merge_insert, without
    `commit_seq`, whether the run's logs are a journal: True for a run without logs yet)."""
    loc = run.child("logs.lance")
    for attempt in range(failures.VANISHED_RETRIES + 1):
        try:
            ds = datasets.open_latest(loc) if version is None else datasets.open_dataset(loc, version=version)
        except VersionNotFoundError:
            # A cleanup beside us removed that version (a short window). The first committed row
            # of a log_id never changes once committed, so the latest version answers the same.
            version = None
            continue
        if ds is None:
            return None, 0, True, True
        schema = ds.schema  # built anew at each access (~30 us)
        try:
            if version is None and keys.SEQ in schema.names and not keys.may_hold(loc, ds, "log_id", log_id):
                return None, ds.version, True, journal.is_journal(schema)  # a new id (the common case)
            found = keys.first_per_key(loc, ds, "log_id", filter=f"log_id = {sql_quote(log_id)}")
            return ((found.to_pylist()[0] if found.num_rows else None), ds.version, keys.SEQ in schema.names,
                    journal.is_journal(schema))
        except StorageError as e:  # a cleanup beside us removed files of the version opened
            if version is not None or attempt == failures.VANISHED_RETRIES or not failures.vanished(e):
                raise
    raise AssertionError("unreachable")


def _record(run: Location, row: dict[str, Any]) -> LogRecord:
    if row.get("metric_names") is not None:  # a journal row holds its metrics
        values = dict(zip(row["metric_names"], row["metric_values"], strict=True))
    else:
        m = scans.scan(run.child("metrics.lance"), columns=["name", "value"],
                        filter=f"write_id = {sql_quote(row['write_id'])}")
        values = dict(zip(*m.to_pydict().values(), strict=True)) if m else {}
    return LogRecord(
        log_id=row["log_id"], split=row["split"], step=row["step"], num_groups=row["num_groups"],
        num_trajectories=row["num_trajectories"], num_exceptions=row["num_exceptions"],
        recorded_at=row["recorded_at"], metrics=values, created=False,
    )


def _alone(logs: Location, log_id: str, fragments: list, version: int) -> bool:
    """Whether the journal at `logs`, at `version` (the commit of `fragments`) or a later one,
    holds `log_id` in the data files of `fragments` only. Every row committed before ours is in
    our version (journal rows are never deleted), and rows are never rewritten in place
    (compaction writes new files), so then no other attempt of the id committed before ours.
    Our version as the commit left it held (no open) reads no commit made after ours."""
    ds = handles.held(logs, version)
    ds = ds if ds is not None else datasets.open_latest(logs)
    ours = {data_files.first_file(f) for f in fragments if f.data_files()}
    return ds is not None and bool(ours) and keys.key_files(logs, ds, "log_id", log_id) == ours


def find_log(run: Location, log_id: str) -> LogRecord | None:
    """The committed log with this id (the first committed, see the module doc), with its metrics,
    or None."""
    row = _winner(run, log_id)[0]
    return None if row is None else _record(run, row)


def _discard(run: Location, written: Mapping[str, list]) -> None:
    """Delete the uncommitted data files of a write that is not committed (best effort: files no
    version names are invisible, and Lance's cleanup removes them after its safety window)."""
    for name, fragments in written.items():
        try:
            writes.discard_files(run.child(f"{name}.lance"), fragments)
        except ArtstoreError as e:
            logger.warning("could not delete the uncommitted files of %s: %s", name, e)


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads log() overlaps its I/O on, kept for the process (starting threads for each log
    cost ~1-5 ms); a forked child makes its own. Its tasks never wait on each other."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="artstore-log"))
        return _POOL[1]


class _Later:
    """A call made when its result is asked for, on the asking thread (a `Future`'s `result()`)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._fn, self._args = fn, args

    def result(self) -> Any:
        return self._fn(*self._args)


def _unqueued(start: Any, fn: Any, *args: Any) -> Any:
    """`start(fn, *args)`, with `fn` reading the committed journal without waiting for this
    process's queued group commits (`artstore.storage.barrier`)."""
    def call() -> Any:
        with barrier.bypass():
            return fn(*args)
    return start(call)


def _register(run: Location) -> None:
    """Record the run at `run` (`{store}/{project}/models/{model}`) in its store's registry; a
    location outside that layout has no store to record it in."""
    found = registry.split_run(run)
    if found is not None:
        registry.register(*found)


def write_log(
    run: Location,
    trajectories: Any,
    *,
    split: str,
    step: int,
    metrics: Mapping[str, float] | None = None,
    log_id: str | None = None,
    allow_nonfinite_rewards: bool = False,
    retention: timedelta = DEFAULT_RETENTION,
    reader_window: timedelta = DEFAULT_READER_WINDOW,
    metrics_as_given: bool = False,
    recorded_at: datetime | None = None,
    values: Mapping[str, float] | None = None,
    state_delta: str | None = None,
    commit_mode: str | None = None,
) -> LogRecord:
    """Store one log call in the run at `run`. See the module doc for the protocol.

    Importers of runs logged elsewhere pass `metrics_as_given=True` (store `metrics` under exactly
    the names given and compute none from the groups: the source already holds the values it
    computed) and `recorded_at` (when the source logged it; timezone-aware, default now).
    `Model.log` passes `values`: the history row it computed (with the model's running sums);
    they are stored as given, while the log id still derives from the caller's `metrics`, and
    `state_delta`: what the log added to the model's running sums (`artstore.log.sums`), stored
    in the log's journal row, all or nothing with it (`LogRecord.state_delta_stored` says so; a
    run whose logs table is not a journal cannot hold it). A journal made before the column
    existed gains it first (`writes.add_null_columns`: once per run, a change of the schema only).
    Old versions go after `retention`; a journal run's logs and data tables after the shorter of
    it and `reader_window` (`upkeep.DEFAULT_READER_WINDOW`). `commit_mode` "group" (None: the
    ARTSTORE_COMMIT variable, else "group") queues a journal run's new log for a group commit
    instead of committing it here (`artstore.log.group_commit`): its record is `queued`, and its
    logs_version is None until that commit lands; "sync" commits it here.
    """
    group = group_commit.mode(commit_mode) == "group"
    check_segment("split", split)
    step = as_int64("step", step, minimum=0)
    groups = as_groups(trajectories)
    extra = metrics_mod.check_extra(metrics)
    for gi, g in enumerate(groups):
        for ti, t in enumerate(g.trajectories):
            check_reward(t.reward, f"groups[{gi}].trajectories[{ti}].reward", allow_nonfinite_rewards)

    if metrics_as_given:
        values = {k: float(v) for k, v in extra.items() if not math.isnan(v)}
    elif values is not None:
        values = {k: float(v) for k, v in values.items() if not math.isnan(v)}
    else:
        values = metrics_mod.compute_metrics(None if trajectories is None else groups, split, extra, step=step)
    if not groups and not values:
        raise ValidationError("trajectories", "nothing to log: give trajectory groups and/or metrics=")
    if recorded_at is None:
        recorded_at = writes.now_utc()
    elif recorded_at.tzinfo is None:
        raise ValidationError("recorded_at", "must be timezone-aware (UTC)")
    write_id = uuid.uuid4().hex
    with contextlib.nullcontext(_pool()) as pool:  # Lance releases the GIL: its I/O overlaps
        # On a bucket the look-up (a LIST) and the data file (a PUT) overlap on threads. On local
        # disk each takes well under a millisecond, less than handing it to a thread and back
        # (which took ~10 ms per log on a loaded machine): they run here, in turn.
        start = pool.submit if not run.is_local else _Later
        # A caller-given id is looked up while the rows are encoded; a derived one needs them.
        if group:  # the look-up reads the committed journal only: queued rows are `submit`'s to find
            start = functools.partial(_unqueued, start)
        lookup = start(_winner, run, check_log_id(log_id)) if log_id is not None else None
        traj, grp = encode_groups(groups, log_id="", write_id=write_id, split=split, step=step, recorded_at=recorded_at)
        if lookup is None:
            log_id = _content_id(split, step, (traj, grp), extra)
            lookup = start(_winner, run, log_id)
        traj, grp = _set_ids(traj, log_id), _set_ids(grp, log_id)
        n_exc = sum(len(g.exceptions) for g in groups)
        commit = pa.Table.from_pylist([{
            "log_id": log_id, "write_id": write_id, "split": split, "step": step,
            "num_groups": len(groups), "num_trajectories": traj.num_rows, "num_exceptions": n_exc,
            "num_metrics": len(values), "recorded_at": recorded_at,
            "metric_names": list(values), "metric_values": list(values.values()),
            "trajectories_ipc": journal.to_ipc(traj), "groups_ipc": journal.to_ipc(grp),
            journal.DELTA_COLUMN: state_delta,
        }], schema=arrow_schema("logs"))
        # The journal row's data file is written while the id is looked up: uncommitted, no
        # reader sees it, and a retry (the id is there) deletes it, so it still stores nothing.
        logs_loc = run.child("logs.lance")
        row_files = None if group else start(writes.write_files, logs_loc, commit)
        try:
            existing, looked_at, first_commit_wins, is_journal = lookup.result()
            if group and existing is None and is_journal and first_commit_wins:
                return group_commit.submit(run, commit, LogRecord(
                    log_id=log_id, split=split, step=step, num_groups=len(groups), num_trajectories=traj.num_rows,
                    num_exceptions=n_exc, recorded_at=recorded_at, metrics=values, state_delta_stored=state_delta is not None,
                    write_id=write_id, queued=True), retention, min(retention, reader_window),
                    register=functools.partial(_register, run) if looked_at == 0 else None)
            if row_files is None:  # group mode, a retry or a logs table before the journal: as sync
                row_files = _Later(list) if existing is not None else _Later(writes.write_files, logs_loc, commit)
            try:
                row_fragments = row_files.result()
            except StorageError:
                if not is_journal:
                    row_fragments = []  # a logs table before the journal refuses a journal row
                elif journal.add_delta_column(logs_loc):  # a journal from before state_delta
                    row_fragments = writes.write_files(logs_loc, commit)
                else:
                    raise
            if existing is not None or not is_journal:
                _discard(run, {"logs": row_fragments})
            if existing is not None:  # a retry: store nothing, write no orphan rows
                return _record(run, existing)
            if looked_at == 0:  # the run's first log: in the store's registry before it commits
                _register(run)
            message = f"log {log_id} ({split}, step {step})"
            if is_journal:  # one commit: the journal row holds the log's rows
                versions: dict[str, int] = {}
                inserted, logs_version = True, writes.commit_files(
                    logs_loc, row_fragments, commit.schema, message, read_version=looked_at or None)
            else:
                versions = legacy_logs.commit_tables(run, pool, legacy_logs.table_rows(traj, grp, values, log_id, write_id, split, step,
                                                                 recorded_at), message)
                legacy = commit.drop_columns(list(journal.PAYLOAD_COLUMNS)).set_column(
                    commit.schema.get_field_index("table_versions"), commit.schema.field("table_versions"),
                    pa.array([list(versions.items())], commit.schema.field("table_versions").type))
                inserted, logs_version = legacy_logs.commit_log(run, legacy, first_commit_wins, looked_at)
        except StorageError:
            check_stored_layout(run.child("trajectories.lance"))  # a version 1 table: say so
            raise

    if is_journal:  # our fragment holds this id: no later look-up of it reads the fragment back
        keys.note_keys(logs_loc, "log_id", row_fragments, [log_id])
    # Another commit between our look-up and ours may hold the same id: then the first one wins,
    # and our rows stay invisible. (Our version right after the look-up's: no other commit; only
    # our data file holding the id: no other attempt of it.)
    if not inserted or (logs_version > looked_at + 1 and not (is_journal and _alone(logs_loc, log_id, row_fragments, logs_version))):
        winner = _winner(run, log_id, version=logs_version)[0]
        if winner is None or winner["write_id"] != write_id:
            return _record(run, winner) if winner is not None else find_log(run, log_id)
    versions["logs"] = logs_version
    window = min(retention, reader_window) if is_journal else retention
    inline_upkeep.maintain(run, versions, window, background=is_journal)
    # A fold every FOLD_EVERY versions: each multiple is in the (look-up, commit] span of some
    # writer's log (compactions of logs make versions too, so no single version is sure to be ours).
    if is_journal and logs_version // fold.FOLD_EVERY > looked_at // fold.FOLD_EVERY:
        upkeep.request_fold(run, window)
    if is_journal:  # and the rest once the run goes quiet, so a small run's rows leave the journal too
        idle_fold.note(run, window)
    upkeep.request_stats(run, retention)  # the registry's stats of the run, a few seconds later
    return LogRecord(
        log_id=log_id, split=split, step=step, num_groups=len(groups), num_trajectories=traj.num_rows,
        num_exceptions=n_exc, recorded_at=recorded_at, metrics=values, logs_version=logs_version,
        state_delta_stored=is_journal and state_delta is not None, write_id=write_id,
    )
