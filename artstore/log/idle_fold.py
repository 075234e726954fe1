"""Folds of quiet runs: a journal run that this process logged to, and that has had no log from it
for FOLD_IDLE_S, gets its remaining journal rows folded into its data tables (one
`upkeep.request_fold`, run by the upkeep thread), then its registry stats refreshed.

Why: log() asks for a fold only every `fold.FOLD_EVERY` journal versions (sync) or rows (group
commits), so a small run (a few logs) or the last logs of any run stayed in the journal's payloads
for good, and every reader decoded them again. A cross-run query over 500 runs of 4 logs read 4
journal data files per run plus the payloads; folded (and compacted by the fold's upkeep), a run
is one data file of `logs` and one of each data table.

- Nothing changes for readers: a fold is the same crash-safe fold as any (see `artstore.log.fold`);
  only when it happens changes.
- One timer thread per process, started by the first `note`; each log pushes its run's fold back
  (the quiet time counts from the run's last log in this process).
- At interpreter exit, the folds still waiting are run for runs in a local store, for at most
  EXIT_FOLD_S altogether (a store in a bucket keeps them for its next log, or `artstore compact`:
  a bucket that stopped answering must not hold the exit).
- `flush()` asks for every waiting fold now (benchmarks, and a caller about to read many runs).
"""

from __future__ import annotations

import atexit
import threading
import time
from datetime import timedelta

from artstore.log import pending_deletes, upkeep
from artstore.storage import Location

FOLD_IDLE_S = 10.0  # a run with no log from this process for this long is folded
EXIT_FOLD_S = 5.0  # at interpreter exit, waiting folds (local stores) get at most this long


class _Timer:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, tuple[Location, timedelta, float]] = {}  # run uri -> (run, window, due: monotonic)
        self._thread: threading.Thread | None = None
        self._closed = False

    def note(self, run: Location, window: timedelta) -> None:
        with self._cond:
            if self._closed:
                return
            self._due[run.uri] = (run, window, time.monotonic() + FOLD_IDLE_S)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="artstore-idle-fold", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take(self, everything: bool = False, local_only: bool = False) -> list[tuple[Location, timedelta]]:
        """The waiting folds that are due (all of them with `everything`), removed from the wait."""
        with self._cond:
            now = time.monotonic()
            keys = [k for k, (run, _, due) in self._due.items()
                    if (everything or due <= now) and (run.is_local or not local_only)]
            return [self._due.pop(k)[:2] for k in keys]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                wait = min((due for *_, due in self._due.values()), default=None)
                self._cond.wait(None if wait is None else max(0.0, wait - time.monotonic()))
            for run, window in self.take():
                _request(run, window)

    def close(self) -> list[tuple[Location, timedelta]]:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return self.take(everything=True, local_only=True)


def _request(run: Location, window: timedelta) -> None:
    pending_deletes.drain_soon(run)  # a bucket's committed pending files still waiting for a batch
    upkeep.request_fold(run, window)
    upkeep.request_stats(run, window)  # the size and row counts after the fold's compaction


_timer = _Timer()


def note(run: Location, window: timedelta) -> None:
    """A log of the journal run at `run` committed: fold it once no log of it came for
    FOLD_IDLE_S (`window`: the reader window its fold's cleanup keeps)."""
    _timer.note(run, window)


def flush() -> None:
    """Ask now for the folds still waiting (they run on the upkeep thread: `upkeep.wait()` waits
    for them)."""
    for run, window in _timer.take(everything=True):
        _request(run, window)


def drop_waiting() -> None:
    """Forget the folds still waiting (tests that keep the state they made)."""
    _timer.take(everything=True)


def _at_exit() -> None:
    waiting = _timer.close()
    if waiting:
        for run, window in waiting:
            _request(run, window)
        upkeep.wait(timeout=EXIT_FOLD_S)


# Registered after upkeep's own handler (imported above), so it runs first (atexit is last in,
# first out): the upkeep thread still takes requests.
atexit.register(_at_exit)
