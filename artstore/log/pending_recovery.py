"""Recovery of pending journal rows (`artstore.storage.pending`) whose writer is gone: a group-mode
writer (`artstore.log.group_commit`) killed after its log() returned leaves its row's pending file,
and the next process that opens the run commits it.

A pending file is abandoned when its writer is gone: on the same host, its pid no longer runs (a
zombie counts as gone); on a bucket or from another host, it is older than STALE_S. Rows whose
log_id the journal holds already are skipped, and of two abandoned attempts of one log_id only the
first is committed. A crash between a commit and the deletion of its files, or two processes
recovering one file, can still commit a row twice: the first committed row of a log_id wins for
every reader, so nothing is counted twice.

When to look (`due`): at the first open of the run's latest journal in this process; then on a
local disk whenever the pending folder changed since the last look (one stat: its mtime), or the
last look left files of writers still running (they may have died since), or RECHECK_S passed; on
a bucket every STALE_S (a LIST each). So a reader that looked moments ago still commits, at its
next read, the rows of a writer killed since (they are acked: its log() had returned).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from artstore.names import sql_quote
from artstore.storage import Location, datasets, keys, pending

logger = logging.getLogger(__name__)

STALE_S = 30.0  # a pending file whose writer cannot be asked (a bucket, another host) is abandoned after this
RECHECK_S = 1.0  # a local run's pending files are looked for at most this often by one process
_CHECKED: dict[str, float] = {}  # logs uri -> when this process last looked for its stale pending files
# local logs uri -> (the pending folder's stamp at the last look, whether that look left files of
# writers still running)
_SEEN: dict[str, tuple[int | None, bool]] = {}
_FRESH_NS = 100_000_000  # a folder changed this recently may change again within its mtime's clock tick
_LOCKS: dict[str, threading.Lock] = {}  # logs uri -> the lock of its recovery in this process
_LOCKS_LOCK = threading.Lock()


def never_checked(uri: str) -> bool:
    """Whether this process never looked for stale pending files of the journal at `uri`."""
    return uri not in _CHECKED


def due(uri: str, local: bool) -> bool:
    """Whether to look for stale pending files of the journal `uri` now (see the module doc)."""
    last = _CHECKED.get(uri)
    if last is None or time.monotonic() - last > (RECHECK_S if local else STALE_S):
        return True
    if not local:
        return False
    seen = _SEEN.get(uri)
    if seen is None:
        return True
    stamp = pending.local_stamp(uri)
    return seen[1] or stamp != seen[0] or (stamp is not None and time.time_ns() - stamp < _FRESH_NS)


def checked(uri: str) -> None:
    """Note that this process looks for stale pending files of the journal `uri` now."""
    _CHECKED[uri] = time.monotonic()


def recover(run: Location, commit: Callable[[Location, pa.Table], None], ours: Callable[[Location, str], bool]) -> int:
    """Commit, through `commit(run, rows)` (one group commit, then its upkeep), the rows of the
    abandoned pending files of the run at `run` that the journal does not hold yet, then delete
    those files; returns how many rows it committed. `ours(run, name)`: whether this process
    itself queued the pending file `name` (never abandoned then). One recovery of a run at a time
    in a process (a run on a bucket that stops answering holds no other run's)."""
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(run.child("logs.lance").uri, threading.Lock())
    with lock:
        return _recover(run, commit, ours)


def _recover(run: Location, commit: Callable[[Location, pa.Table], None], ours: Callable[[Location, str], bool]) -> int:
    logs_uri = run.child("logs.lance").uri
    stamp = pending.local_stamp(logs_uri) if run.is_local else None  # before the listing: a file after it changes it
    foreign = [n for n in pending.names(run) if not ours(run, n)]
    names = [n for n in foreign if _abandoned(run, n)]
    if run.is_local:
        _SEEN[logs_uri] = (stamp, len(names) < len(foreign))
    if not names:
        return 0
    rows = pa.concat_tables([pending.read(run, n) for n in names])
    logs = run.child("logs.lance")
    ds = datasets.open_latest(logs)
    if ds is not None:
        ids = ", ".join(sql_quote(i) for i in rows["log_id"].to_pylist())
        held = keys.first_per_key(logs, ds, "log_id", columns=["log_id"], filter=f"log_id IN ({ids})")["log_id"]
        keep = pc.invert(pc.is_in(rows["log_id"], value_set=held.combine_chunks()))
        rows = rows.filter(keep)
    if rows.num_rows == 0:
        pending.delete(run, names)
        return 0
    first = {}
    for i, log_id in enumerate(rows["log_id"].to_pylist()):  # two abandoned attempts of one id: the first
        first.setdefault(log_id, i)
    rows = rows.take(sorted(first.values()))
    commit(run, rows)
    pending.delete(run, names)
    logger.info("committed %d pending logs of %s left by a writer that is gone", rows.num_rows, run.redact(run.uri))
    return rows.num_rows


def _abandoned(run: Location, name: str) -> bool:
    """Whether the writer of the pending file `name` (not one this process queued) is gone."""
    found = pending.owner(name)
    if found is None:
        return False
    host, pid = found
    if host == pending.HOST and run.is_local and pid != os.getpid():
        return not _alive(pid)
    # another host, a bucket, or our own pid on a file we did not queue (a process before us with
    # our pid left it): by its age
    return pending.age_s(run, name) > STALE_S


def _alive(pid: int) -> bool:
    """Whether the process `pid` of this host runs (a zombie, killed but not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
