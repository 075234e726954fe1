"""Upkeep of a run's tables (compaction, cleanup of old versions), off the log() caller's path.

`log()` commits, asks for upkeep of each table whose new version is a multiple of
`writer.MAINTAIN_EVERY`, and returns; one background thread per process does the work. Why: a
compaction or a cleanup costs tens to hundreds of ms (cleanup reads every manifest inside the
retention window), and doing it inline made some log calls 10-100x slower than the median.

- Single-flight per table: a table is upkept by at most one thread of this process at a time, and
  a request for a table that is already waiting is merged into that one (the policy looks at the
  table as it is then, not at the request), so the queue never holds more than one entry per table.
- Crash-safe as before: compaction and cleanup are ordinary Lance commits; a process killed in the
  middle leaves every table at its last committed version (plus unreferenced files, which a later
  cleanup removes). Requests still waiting when a process ends are dropped: the next log() of the
  run asks again. At interpreter exit the worker finishes the table it is on.
- Failures (e.g. losing a race with another process's compaction) are logged, never raised: the
  log they follow is already committed.

`wait()` blocks until the upkeep asked for so far (of one run, or of all) is done: for tests and
benchmarks that count fragments, and for a caller about to copy a store.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import OrderedDict
from datetime import timedelta

from artstore.storage import Location, tables

logger = logging.getLogger(__name__)


class _Worker:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, tuple[Location, str, timedelta]] = OrderedDict()  # uri -> job
        self._busy: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def request(self, loc: Location, table: str, retention: timedelta) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending[loc.uri] = (loc, table, retention)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="artstore-upkeep", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                uri, (loc, table, retention) = self._pending.popitem(last=False)
                self._busy = uri
            try:
                tables.maintain(loc, table, retention)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one table's failure
                logger.warning("upkeep of %s skipped: %s", loc.redact(str(loc.uri)), e)
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def wait(self, prefix: str = "", timeout: float | None = None) -> bool:
        def done() -> bool:
            return not any(u.startswith(prefix) for u in [*self._pending, *([self._busy] if self._busy else [])])

        with self._cond:
            return self._cond.wait_for(done, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()


_worker = _Worker()
atexit.register(_worker.close)


def request(loc: Location, table: str, retention: timedelta) -> None:
    """Ask for upkeep of the `table` dataset at `loc` (see `tables.maintain`); returns at once."""
    _worker.request(loc, table, retention)


def wait(under: Location | None = None, timeout: float | None = None) -> bool:
    """Block until the upkeep asked for so far of the tables under `under` (a run's location; all
    tables when None) is done. False when `timeout` seconds passed first."""
    prefix = "" if under is None else under.uri.rstrip("/") + "/"
    return _worker.wait(prefix, timeout)
