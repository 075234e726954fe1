"""Group commit (the default mode; `Model(commit="sync")` or ARTSTORE_COMMIT=sync opts out): a
log() that does not wait for a Lance commit. Many small logs become few commits of the journal.

In group mode `write_log` validates, encodes and looks up the log exactly as in sync mode, then
`submit`s its journal row: the row is written as one pending file (`artstore.storage.pending`,
`{run}/logs.pending/`), queued, and log() returns. Each run this process logs to has its own
committer thread (`artstore.log.run_committer`: a run whose bucket stops answering delays no other
run's commits; it ends when idle), which takes every row queued for the run and appends them to
`logs.lance` in ONE commit (one data file and one fragment for the batch, its rows in log order
under one sequence), then deletes their pending files and asks for the upkeep a sync log asks for
(compaction, fold, idle fold, stats).

The journal's fragments stay within the sync bound (`inline_upkeep.BOUND`): a commit that would
pass it waits for (or runs) the journal's compaction first (`inline_upkeep.room`). A commit takes
at most `run_committer.MAX_BATCH` rows, and a log() whose run has more rows waiting than that
waits at most `inline_upkeep.CROWDED_WAIT_S` for the committer, as a sync log waits for a
crowded journal.

What "logged" means in group mode:
- when log() returns, the log is durable (its pending file) and every read of the run in this
  process sees it: each open of the latest `logs.lance` first waits for this process's queued
  rows of that run (`artstore.storage.barrier`), or takes them as they are (`queued`: the
  history);
- other processes see it once its group commit lands: a log after a quiet spell is committed at
  once (milliseconds on an idle local disk), and a run's commits start at most every
  `run_committer.COMMIT_INTERVAL_S` (0.1 s) per process logging to it (`run_committer.spacing`,
  1 s at most), so logs that come faster are batched and seen at most that much later;
- a writer killed after log() returned leaves its pending file; the next process that opens the
  run commits it (`artstore.log.pending_recovery`; a process that has the run open looks again
  every RECHECK_S there). A row committed twice (a crash between a
  group commit and the deletion of its files) is read once: the first committed row of a log_id
  wins for every reader (`keys.first_per_key`, the fold, the sums);
- `flush()` (and `Model.flush()`) waits until everything queued is committed; it runs at normal
  interpreter exit too.

Differences from sync mode a caller can see: a log's record has no `logs_version` when log()
returns (the committer fills it in once the commit lands: after `flush()` it is set); one version
of `logs` holds a batch of logs, so `as_of` a version names all of its batch (time travel is per
group commit, not per log); another Model object of the same run in this process counts a queued
log in its running sums (cumulative metrics) once it is committed, not while it is queued.

A retried log_id is stored once: the look-up reads the committed journal as in sync mode, and
`submit` also finds an attempt still queued in this process. Two attempts racing from different
processes both queue a row; the first committed wins, as in sync mode, but the loser's caller
has already been told its log was created (the sums of its Model then hold both deltas until
it reads the run again).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa

from artstore.errors import ArtstoreError, StorageError, ValidationError
from artstore.log import (
    batch_commit,
    inline_upkeep,
    pending_deletes,
    pending_recovery,
    run_committer,
)
from artstore.storage import (
    Location,
    barrier,
    pending,
)

logger = logging.getLogger(__name__)

MODES = ("sync", "group")
ENV = "ARTSTORE_COMMIT"
EXIT_FLUSH_S = 30.0  # at interpreter exit, queued logs (of all runs together) get at most this long to commit
_NO_WAIT = ("artstore-upkeep", "artstore-idle-fold", "artstore-group-commit")  # threads that never wait (name prefixes)


def mode(given: str | None = None) -> str:
    """The commit mode: `given`, else ARTSTORE_COMMIT, else "group" (the default)."""
    found = (given if given is not None else os.environ.get(ENV) or "group").strip().lower()
    if found not in MODES:
        raise ValidationError("commit", f"must be 'sync' or 'group', got {found!r}")
    return found


_COND = run_committer.COND
_QUEUES: dict[str, run_committer.Queue] = {}  # logs uri -> queue
_PID = os.getpid()  # the process the queues are of (a forked child starts afresh)
_EXIT_HOOKED = False
_ARMED = False  # a group log was made here: look for pending files on buckets too


def on_commit(listener: Callable[[Location, int, list[tuple[Any, int]]], None]) -> None:
    """Call `listener(journal location, version, [(record, row address)])` (the address: its
    fragment id << 32 | its offset there; the rows in log order) after each group
    commit of this process's queued logs (in the committer thread: it must be quick and
    thread-safe), e.g. so kept reads extend by the rows without reading them back. The record is
    None for a row that lost to an earlier committed row of its log_id (a retry whose look-up
    missed the first copy): stored, never read, so never to be added to a kept read."""
    if listener not in run_committer.ON_COMMIT:
        run_committer.ON_COMMIT.append(listener)


def on_rows(hook: Callable[[Location, list[pa.Table]], None]) -> None:
    """Call `hook(journal location, [journal row of each log])` after each group commit of this
    process's queued logs, before their waiters return (in the committer thread: quick and
    thread-safe), e.g. so a read of those logs need not take their rows back. Rows that lost
    to an earlier copy of their log_id are among them (their write_ids are never read)."""
    if hook not in run_committer.ON_ROWS:
        run_committer.ON_ROWS.append(hook)


def submit(run: Location, row: pa.Table, record: Any, retention: timedelta, window: timedelta,
           register: Callable[[], None] | None = None) -> Any:
    """Queue the journal row `row` of the log `record` (a LogRecord, `queued`, its logs_version
    None until the commit sets it) for the
    next group commit of the run at `run` and return `record`, once its pending file is written.
    An attempt of the same log_id still queued here: its record, `created` False. `register`
    (the run's first log) runs before the run's first row is queued in this process."""
    global _ARMED
    _ARMED = True
    uri = run.child("logs.lance").uri
    if pending_recovery.never_checked(uri):  # the run's first log here: a writer gone may have left rows
        _recover_once(run)
    with _COND:
        _forked()
        queue = _QUEUES.get(uri)
        first = queue is None
        queue = _QUEUES.setdefault(uri, run_committer.Queue(run))
        for other in (*(i.record for i in (*queue.busy, *queue.items)), *queue.reserved.values()):
            if other.log_id == record.log_id:
                return dataclasses.replace(other, created=False, state_delta_stored=False, write_id=None, queued=False)
        queue.reserved[record.write_id] = record  # a retry of its id racing this one finds it
    name = pending.name_for(record.write_id)
    try:
        if first and register is not None:
            register()
        pending.write(run, name, row)
    except BaseException:
        with _COND:
            del queue.reserved[record.write_id]
        raise
    with _COND:
        del queue.reserved[record.write_id]
        queue.queued += 1
        queue.items.append(batch_commit.Item(run, row, record, name, retention, window, queue.queued))
        _start(queue)
        if queue.queued - queue.done > run_committer.MAX_BATCH:
            _crowded(queue)
    return record


def _crowded(queue: run_committer.Queue) -> None:
    """(Under _COND) the run has more rows waiting than one group commit takes
    (`run_committer.MAX_BATCH`: its committer is behind, compacting or retrying): wait at most
    `inline_upkeep.CROWDED_WAIT_S` for it to catch up, as a sync log waits for a crowded
    journal's compaction; this bounds the rows a process holds queued."""
    queue.urgent += 1  # no gathering meanwhile
    _COND.notify_all()
    try:
        _COND.wait_for(lambda: queue.queued - queue.done <= run_committer.MAX_BATCH or queue.dropped,
                       inline_upkeep.CROWDED_WAIT_S)
    finally:
        queue.urgent -= 1


def flush(run: Location | None = None, timeout: float | None = None) -> None:
    """Wait until every log this process queued (for the run at `run`, or all) is committed.
    StorageError when a commit round that began after the call fails (its rows stay pending and
    are retried): a round under way when the storage recovers is retried, not raised."""
    deadline = None if timeout is None else time.monotonic() + timeout
    targets = _targets(run)
    with _hurried(targets):
        for queue, ticket in targets:
            _wait(queue, ticket, None if deadline is None else max(0.0, deadline - time.monotonic()), finished=True)


@contextlib.contextmanager
def _hurried(targets: list[tuple[run_committer.Queue, int]]) -> Iterator[None]:
    """Meanwhile the committers of the `targets`' queues commit what they have without gathering
    (all at once: waiting for one run does not leave the others gathering)."""
    with _COND:
        for queue, _ in targets:
            queue.urgent += 1
        _COND.notify_all()
    try:
        yield
    finally:
        with _COND:
            for queue, _ in targets:
                queue.urgent -= 1


def _targets(run: Location | None) -> list[tuple[run_committer.Queue, int]]:
    """(queue, its latest ticket) of the run at `run`, or of every run."""
    with _COND:
        queues = list(_QUEUES.values()) if run is None else [q for q in [_QUEUES.get(run.child("logs.lance").uri)] if q]
        return [(q, q.queued) for q in queues]


def drop_queued() -> None:
    """Forget every log this process queued and has not committed (tests whose storage server is
    gone: nothing retries them here any more). Their pending files stay where they were written,
    for the next process that opens the run."""
    with _COND:
        for queue in _QUEUES.values():
            queue.items, queue.dropped = [], True  # its committer ends
        _QUEUES.clear()
        _COND.notify_all()


def commits_since(logs: Location, version: int, read_at: float) -> tuple[int, int, list[str] | None] | None:
    """(the latest version this process's group commits made of the journal at `logs`, its
    physical rows, the write_ids this process committed in versions after `version`: None when
    they are no longer all remembered), or None when it made none after `version`. `version` is
    the one a read that began at `read_at` (time.monotonic()) found: a commit that landed before
    then is in it, or was made to a journal deleted since (its versions, above `version` even,
    are not this journal's: a run deleted and logged again), so only later ones count."""
    with _COND:
        queue = _QUEUES.get(logs.uri)
        if queue is None or not queue.commits or queue.commits[-1][0] <= version:
            return None
        after = [c for c in queue.commits if c[0] > version and c[3] > read_at]
        if not after:
            return None
        forgotten = len(after) == len(queue.commits) == queue.commits.maxlen
        return after[-1][0], after[-1][1], None if forgotten else [w for c in after for w in c[2]]


def _wait(queue: run_committer.Queue, ticket: int, timeout: float | None = None, finished: bool = False) -> None:
    """Until `queue` committed `ticket` (and, `finished`, deleted its pending files)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _COND:
        started = queue.rounds  # a round under way may have begun before a fault ended: not counted
        queue.urgent += 1
        _COND.notify_all()
        try:
            _wait_locked(queue, ticket, started, deadline, timeout)
            while finished and queue.finished < ticket:
                _COND.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            queue.urgent -= 1


def _wait_locked(queue: run_committer.Queue, ticket: int, started: int, deadline: float | None, timeout: float | None) -> None:
    """(Under _COND) until `queue` committed `ticket`; StorageError when a commit round that began
    after round `started` fails (each round already retried its requests within the storage
    options' budget: the storage kept failing while the caller waited)."""
    while queue.done < ticket:
        if queue.failed_round > started:
            raise StorageError(
                f"logs of {queue.run.redact(queue.run.uri)} are not committed yet ({queue.error}); they are kept in "
                f"{pending.DIR}/ and retried, and the next process that opens the run commits them")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise StorageError(f"logs of {queue.run.redact(queue.run.uri)} were not committed within {timeout:.0f} s; "
                               f"they are kept in {pending.DIR}/")
        _COND.wait(left)


def _before_open(loc: Location) -> None:
    """The barrier hook: before this process opens the latest journal of a run, its queued rows
    of that run are committed (unless `barrier.no_wait()`), and stale pending files of the run
    are looked for when due (`_due`)."""
    uri = loc.uri
    if not uri.endswith("logs.lance") or threading.current_thread().name.startswith(_NO_WAIT):
        return
    if pending_recovery.due(uri, loc.is_local):
        _recover_once(_run_of(loc))
    queue = _QUEUES.get(uri)
    if queue is not None and queue.done < queue.queued and barrier.waiting():
        _wait(queue, queue.queued)


def queued(logs: Location) -> list[Any]:
    """The records of the logs this process queued for the journal at `logs` and has not
    committed yet, in queue order (a read that takes them as they are need not wait: see
    `artstore.read.latest_logs.beyond`)."""
    return [record for record, _ in queued_rows(logs)]


def queued_rows(logs: Location) -> list[tuple[Any, pa.Table]]:
    """(record, journal row) of each log `queued` lists, in queue order (the order they commit
    in): a read that takes their rows as they are (`Run.groups` of a step) need not wait."""
    queue = _QUEUES.get(logs.uri)
    if queue is None or queue.done >= queue.queued:
        return []
    with _COND:
        return [(i.record, i.row) for i in (*queue.busy, *queue.items)]


barrier.add(_before_open)


def _run_of(logs: Location) -> Location:
    return Location(logs.uri.rstrip("/").rsplit("/", 1)[0], logs.storage_options)


def _start(queue: run_committer.Queue) -> None:
    """(Under _COND) start the committer of `queue` unless it runs; hook the exit flush once."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        _EXIT_HOOKED = True
        atexit.register(_at_exit)  # after upkeep's and idle_fold's: runs before them
    run_committer.start(queue)
    _COND.notify_all()


def _forked() -> None:
    """(Under _COND) in a forked child, forget the parent's queues: they are the parent's to commit."""
    global _PID, _QUEUES
    if _PID != os.getpid():
        _PID, _QUEUES = os.getpid(), {}


def in_flight(logs: Location) -> dict[str, list[Any]]:
    """{data file path: the record of each of its rows, in row order} of the batch this process is
    committing to the journal at `logs` (its commit may have landed and not been told to
    `on_commit` yet): a reader that finds fragments of these files committed knows their rows
    without reading them."""
    queue = _QUEUES.get(logs.uri)
    return {} if queue is None else queue.flying


def _recover_once(run: Location) -> None:
    """Commit the run's stale pending files (when `pending_recovery.due`; on a bucket only once
    this process made a group log or ARTSTORE_COMMIT says group: a LIST per run otherwise)."""
    uri = run.child("logs.lance").uri
    if not pending_recovery.due(uri, run.is_local):
        return
    pending_recovery.checked(uri)
    if not run.is_local and not _ARMED and mode() != "group":
        return
    try:
        recover(run)
    except ArtstoreError as e:  # e.g. a reader without write access: the next writer commits them
        logger.warning("pending logs of %s not committed: %s", run.redact(run.uri), e)


def recover(run: Location) -> int:
    """Commit the pending files of the run at `run` whose writer is gone (see the module doc and
    `artstore.log.pending_recovery`), skipping rows whose log_id the journal holds already;
    returns how many rows it committed. One recovery of a run at a time in a process."""
    with barrier.bypass():
        return pending_recovery.recover(run, batch_commit.commit_recovered, _ours)


def _ours(run: Location, name: str) -> bool:
    """Whether the pending file `name` of the run at `run` is one this process has queued (or is
    writing, or committed and waits to delete: `pending_deletes`)."""
    with _COND:
        queue = _QUEUES.get(run.child("logs.lance").uri)
        if queue is not None and (any(i.name == name for i in (*queue.items, *queue.busy)) or
                                  any(name == pending.name_for(w) for w in queue.reserved)):
            return True
    return pending_deletes.waiting(run, name)


def _at_exit() -> None:
    """Flush every run's queue within EXIT_FLUSH_S in all; every committer is hurried at once, so
    a run whose storage does not answer keeps no other run's logs from committing."""
    deadline = time.monotonic() + EXIT_FLUSH_S
    targets = _targets(None)
    with _hurried(targets):
        for queue, ticket in targets:
            try:
                _wait(queue, ticket, max(0.0, deadline - time.monotonic()), finished=True)
            except ArtstoreError as e:
                logger.warning("%s", e)
    pending_deletes.drain()  # the committed pending files a bucket still keeps
