"""Deletes of committed pending files on a bucket, a batch at a time.

A group commit's pending files (`artstore.storage.pending`) are done once their rows commit. On a
bucket each delete is a request (one per 1,000 files), and a lone log's delete after its commit was
one of a small log's ~8.8 requests. Here they wait and go together: once BATCH are waiting, once the
first waited AFTER_S (checked at the run's next commit), when the run goes quiet
(`artstore.log.idle_fold`, through `drain_soon`: on a thread of its own, so a bucket that stops
answering holds no other run's quiet fold), at `Run.wait_for_upkeep()`, and at interpreter exit.

Nothing depends on when they go. A waiting file's row is committed: this process's recovery skips
it (`waiting`), another process's takes it for a live writer's until it is `STALE_S` old (AFTER_S
and the quiet fold come well before), and after a kill the next recovery finds its log_id committed
and deletes it without committing it again. A local disk deletes at once (no request to save, and
a folder that stays empty keeps readers from listing it: `pending_recovery.due`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from artstore.errors import StorageError
from artstore.storage import Location, pending

logger = logging.getLogger(__name__)

BATCH = 16  # files deleted in one request once this many wait
AFTER_S = 10.0  # the first waiting file goes by the next commit after this long (pending_recovery.STALE_S: 30)

_LOCK = threading.Lock()
_WAITING: dict[str, tuple[Location, list[str], float]] = {}  # run uri -> (run, names, monotonic s of the first)
_SOON: queue.SimpleQueue[Location] = queue.SimpleQueue()  # runs whose waiting files `drain_soon` asked to go
_DRAINER: threading.Thread | None = None


def done(run: Location, names: list[str]) -> None:
    """The pending files `names` of the run at `run` are committed: delete them (on a bucket, with
    the ones waiting, when the batch is due)."""
    if not names:
        return
    if run.is_local:
        pending.delete(run, names)
        return
    with _LOCK:
        _, waiting, since = _WAITING.get(run.uri, (run, [], time.monotonic()))
        waiting = [*waiting, *names]
        if len(waiting) < BATCH and time.monotonic() - since < AFTER_S:
            _WAITING[run.uri] = (run, waiting, since)
            return
        _WAITING.pop(run.uri, None)
    pending.delete(run, waiting)


def waiting(run: Location, name: str) -> bool:
    """Whether the pending file `name` of the run at `run` is committed and waits here to go."""
    with _LOCK:
        found = _WAITING.get(run.uri)
        return found is not None and name in found[1]


def forget() -> None:
    """Keep the waiting files (tests whose storage is gone: a later recovery deletes them)."""
    with _LOCK:
        _WAITING.clear()


def drain(run: Location | None = None) -> None:
    """Delete the waiting files now (of the run at `run`, or of every run). A failed delete is
    logged, not raised: the files' rows are committed, and a later recovery deletes them."""
    with _LOCK:
        taken = [_WAITING.pop(k) for k in list(_WAITING) if run is None or k == run.uri]
    for where, names, _ in taken:
        try:
            pending.delete(where, names)
        except StorageError as e:
            logger.warning("committed pending files of %s left for a later recovery: %s", where.redact(where.uri), e)


def drain_soon(run: Location) -> None:
    """`drain(run)` on this module's own thread (started on first use, a daemon): the caller, e.g.
    the timer of quiet folds, never waits on the bucket's deletes (retried for minutes when it
    stops answering). Nothing waiting for the run: nothing to do."""
    global _DRAINER
    with _LOCK:
        if run.uri not in _WAITING:
            return
        if _DRAINER is None or not _DRAINER.is_alive():
            _DRAINER = threading.Thread(target=_drain_queued, name="artstore-pending-deletes", daemon=True)
            _DRAINER.start()
    _SOON.put(run)


def _drain_queued() -> None:
    while True:
        drain(_SOON.get())
