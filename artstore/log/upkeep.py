"""Upkeep off the log() caller's path: compaction, cleanup of old versions, the fold, stats.

Two background threads per process (lanes) share one queue:
- the journal lane compacts and cleans up runs' journals (`logs`: one fragment and one manifest
  per sync log or group commit). Its jobs wait behind nothing else: with one thread for everything, a fold, a stats
  refresh or another run's slow bucket (a stale refresh of a deleted bucket's run took ~10 s)
  held every journal's cleanup meanwhile, and its manifests piled up (~170 logs' in CI);
- the other lane folds journals into the data tables (`artstore.log.fold`), compacts and cleans
  up those, and refreshes runs' stats.

`log()` asks for its journal's compaction every `inline_upkeep.MAINTAIN_EVERY` versions and compacts it
itself only past `inline_upkeep.MAX_FRAGMENTS` (logs outrunning the lane). Cleanup reads every manifest
inside the retention window (0.2-0.3 s of CPU per table at 2,100 versions), so inline it made some
log calls 10-100x slower than the median; it runs here, when `compaction.maintain` finds it due.

- Single-flight per table: a table is maintained by at most one thread of this process at a time,
  and a request for a table that is already waiting is merged into that one.
- Crash-safe: cleanup only deletes files no version inside the window (nor a tag) needs; a process
  killed in the middle leaves files that the next cleanup removes. Requests still waiting when a
  process ends are dropped (the next compaction asks again); at interpreter exit each lane
  finishes the job it is on.
- Failures are logged, never raised: the log they follow is already committed.

`wait()` blocks until the jobs asked for so far (of one run, or of all) are done: for tests and
benchmarks that count files, and for a caller about to copy a store.

A stats refresh (`artstore.log.run_stats`) is due `run_stats.delay_s` after the first log that asked
for it (later logs meanwhile join it), at once for `wait()`, and at interpreter exit (for at most
EXIT_FLUSH_S).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from datetime import timedelta

from artstore.log import fold, registry
from artstore.log.windows import DEFAULT_READER_WINDOW, DEFAULT_RETENTION  # noqa: F401  (re-exported)
from artstore.storage import Location, compaction, datasets, fragments, run_lock

logger = logging.getLogger(__name__)

EXIT_FLUSH_S = 10.0  # at interpreter exit, stale runs' stats are refreshed for at most this long


@dataclasses.dataclass(frozen=True)
class _Job:
    """A cleanup (`compaction.maintain` of `table` at `loc`; compacting too with `compact`; for a
    journal, first dropping the payloads of folded logs with `drop`), a fold or a stats refresh."""

    loc: Location
    table: str
    retention: timedelta
    compact: bool = False
    drop: bool = False


_JOURNAL, _OTHER = "journal", "other"  # the worker's two lanes (threads); see `_Worker`


def _lane(table: str) -> str:
    return _JOURNAL if table == "logs" else _OTHER


class _Worker:
    """The process's upkeep: two threads (lanes) over one queue. The journal lane compacts and
    cleans up runs' `logs` (journals) only: each log adds a fragment and a manifest to its journal,
    so a job there must never wait behind a fold, a stats refresh or a slow bucket of another run
    (one thread for all: a stale stats refresh of a run on a bucket that stopped answering held
    every journal's cleanup for ~10 s, 170 logs' manifests). The other lane does the rest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, _Job] = OrderedDict()  # uri -> job
        self._busy: dict[str, str] = {}  # lane -> uri of the job it runs
        self._stats: dict[str, tuple[Location, timedelta, float]] = {}  # key -> (run, retention, due: monotonic)
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False

    def request(self, job: _Job, key: str | None = None) -> None:
        with self._cond:
            if self._closed:
                return
            key = key or job.loc.uri
            waiting = self._pending.get(key)
            if waiting is not None:  # merged into the waiting one (which keeps its place)
                job = dataclasses.replace(job, compact=job.compact or waiting.compact, drop=job.drop or waiting.drop)
            self._pending[key] = job
            self._start(_lane(job.table))

    def request_stats(self, run: Location, retention: timedelta) -> None:
        with self._cond:
            if self._closed:
                return
            from artstore.log import run_stats  # on first use: importing upkeep stays cheap

            key = run.child(_STATS).uri
            if key not in self._stats:  # a stale refresh keeps its due time: logs meanwhile join it
                self._stats[key] = (run, retention, time.monotonic() + run_stats.delay_s(run))
            self._start(_OTHER)

    def _start(self, lane: str) -> None:
        thread = self._threads.get(lane)
        if thread is None or not thread.is_alive():
            name = "artstore-upkeep" + ("-journal" if lane == _JOURNAL else "")
            self._threads[lane] = threading.Thread(target=self._run, args=(lane,), name=name, daemon=True)
            self._threads[lane].start()
        self._cond.notify_all()

    def _due(self) -> str | None:
        """The key of the stats refresh due first, when it is due now."""
        if not self._stats:
            return None
        key = min(self._stats, key=lambda k: self._stats[k][2])
        return key if self._stats[key][2] <= time.monotonic() else None

    def _next(self, lane: str) -> tuple[str, _Job] | None:
        """The next job of `lane` (a cleanup or fold first, then a due stats refresh), waiting for
        one; None when closed with nothing left. A job whose key the other lane runs waits."""
        while True:
            busy = set(self._busy.values())
            uri = next((k for k, job in self._pending.items() if _lane(job.table) == lane and k not in busy), None)
            if uri is not None:
                return uri, self._pending.pop(uri)
            if lane == _OTHER:
                key = self._due()
                if key is not None:
                    run, retention, _ = self._stats.pop(key)
                    return key, _Job(run, _STATS, retention)
            if self._closed and (lane == _JOURNAL or not self._stats):
                return None
            wait = None if lane == _JOURNAL or not self._stats else \
                max(0.0, min(d for *_, d in self._stats.values()) - time.monotonic())
            self._cond.wait(wait)

    def take_over(self, key: str, timeout: float = 0.0) -> bool:
        """True, with a waiting job of `key` dropped, once no job of `key` runs (waiting up to
        `timeout` seconds for one running); else False."""
        with self._cond:
            if not self._cond.wait_for(lambda: key not in self._busy.values(), timeout):
                return False
            self._pending.pop(key, None)
            return True

    def _run(self, lane: str) -> None:
        while True:
            with self._cond:
                job = self._next(lane)
                if job is None:
                    return
                uri, job = job
                loc, table, retention = job.loc, job.table, job.retention
                self._busy[lane] = uri
            t0 = time.perf_counter()
            try:
                if table == _STATS:
                    _refresh_stats(loc, retention)
                elif table == _FOLD:
                    _fold(loc, retention)
                else:
                    _maintain(job)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one table's failure
                if table == _STATS:  # stale stats only: the next log's refresh, or `artstore compact`, redoes it
                    logger.info("stats of %s not refreshed: %s", loc.redact(str(loc.uri)), e)
                else:
                    logger.warning("cleanup of %s skipped: %s", loc.redact(str(loc.uri)), e)
            finally:
                logger.debug("%s of %s took %.3f s", table, loc.redact(str(loc.uri)), time.perf_counter() - t0)
                with self._cond:
                    self._busy.pop(lane, None)
                    self._cond.notify_all()

    def wait(self, prefix: str = "", timeout: float | None = None, stats: bool = True) -> bool:
        def done() -> bool:
            waiting = [*self._pending, *self._busy.values(), *(self._stats if stats else ())]
            return not any(u.startswith(prefix) for u in waiting)

        with self._cond:
            for key, (run, retention, _) in self._stats.items():
                if stats and key.startswith(prefix):
                    self._stats[key] = (run, retention, 0.0)  # due now
            self._cond.notify_all()
            return self._cond.wait_for(done, timeout)

    def close(self) -> None:
        """At interpreter exit: drop waiting cleanups, refresh stale stats (at most EXIT_FLUSH_S),
        and let the jobs under way finish."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._stats = {k: (run, retention, 0.0) for k, (run, retention, _) in self._stats.items()}
            self._cond.notify_all()
            threads = dict(self._threads)
        journal = threads.get(_JOURNAL)
        if journal is not None:
            journal.join()
        thread = threads.get(_OTHER)
        if thread is not None:
            thread.join(EXIT_FLUSH_S)
            with self._cond:
                self._stats.clear()  # what is left of them after the limit
                self._cond.notify_all()
                stuck = self._busy.get(_OTHER, "").endswith(_STATS)  # e.g. a bucket that stopped answering
            if not stuck:
                thread.join()


_FOLD = "#fold"  # the job of folding a run's journal (its key: the run's uri + "/#fold")
_STATS = "#stats"  # the job of refreshing a run's stats in the store's registry
# Each refresh rewrites its run's row into a fragment of its own: past this many fragments the
# registry is compacted (and cleaned up when due).
REGISTRY_MAX_FRAGMENTS = 16
_registry_cleaned: dict[str, int] = {}  # registry uri -> its version when this process last cleaned it up


def _refresh_stats(run: Location, retention: timedelta) -> None:
    """Write the run's stats into its store's registry; compact the registry when its fragments
    pile up (each refresh rewrites one row into a new fragment), and clean up its old versions
    when they pile up (`compaction.maintain`: every CLEANUP_AFTER_VERSIONS versions, when due)."""
    from artstore.log import run_stats

    if not run_stats.refresh(run):
        return
    found = registry.split_run(run)
    if found is not None:
        loc = registry.location(found[0])
        window = min(retention, DEFAULT_READER_WINDOW)  # nothing reads an old registry version
        ds = datasets.open_dataset(loc)
        if ds is None:
            return
        if fragments.fragments_of(ds) > REGISTRY_MAX_FRAGMENTS:
            compaction.maintain(loc, "runs", window)
        elif ds.version - _registry_cleaned.get(loc.uri, 0) >= compaction.CLEANUP_AFTER_VERSIONS:
            # A run's refresh replaces its row (an upsert), and the old row's fragment goes with
            # it: one run's refreshes pile up versions (4 files each), never fragments. Without
            # this, a 10,000-step run left 559 files in the registry, growing with every refresh.
            _registry_cleaned[loc.uri] = ds.version
            compaction.maintain(loc, "runs", window, compact=False)


def _fold(run: Location, retention: timedelta) -> None:
    """Fold the run's journal into its data tables, then compact those (cleanup when due); the
    journal's part (dropping the folded payloads, compaction, cleanup) goes to the journal lane."""
    # Once: folding again whatever was logged meanwhile would append one small fragment per round.
    # Only a round capped at MAX_LOGS (a backlog) goes on.
    while max(fold.fold(run, max_logs=fold.MAX_LOGS).values(), default=0) >= fold.MAX_LOGS:
        pass
    # the journal keeps no payload once folded: its old files go at cleanup
    _worker.request(_Job(run.child("logs.lance"), "logs", retention, compact=True, drop=True))
    for table in fold.GATED:  # on the handles the fold's commits left (on a bucket: no LIST each)
        compaction.maintain(run.child(f"{table}.lance"), table, retention, held=not run.is_local)


def _maintain(job: _Job) -> None:
    """Compact (with `job.compact`) and clean up when due one table; a journal first drops its
    folded logs' payloads (with `job.drop`), and its compactions drop them too."""
    rewrite = None
    run = job.loc.sibling("")
    # One process of this host at a time (`run_lock`): two compactions of the same fragments do
    # the rewrite twice and throw one away. A compaction another process runs now is left to it;
    # a payload drop waits for it, then runs (a drop asked for after a fold is not asked again).
    with run_lock.held(run, f"{job.table}.compact", wait=job.drop) as mine:
        if not mine and not job.drop:
            return
        if job.table == "logs":
            if job.drop:
                fold.drop_payloads(run)
            rewrite = fold.drop_folded_payloads(run) if job.compact else None
        # a journal's: on this process's handle (its commits keep it at the latest they made;
        # another process's commits since are Lance's to check when the compaction commits)
        compaction.maintain(job.loc, job.table, job.retention, compact=job.compact, rewrite=rewrite,
                            held=job.table == "logs")


_worker = _Worker()
atexit.register(_worker.close)


def request(loc: Location, table: str, retention: timedelta, compact: bool = False) -> None:
    """Ask for a cleanup of the `table` dataset at `loc` (`compaction.maintain`, compacting too
    with `compact`; it cleans up when `cleanup_due`); returns at once."""
    _worker.request(_Job(loc, table, retention, compact=compact))


def take_over(loc: Location, timeout: float = 0.0) -> bool:
    """Whether a caller may maintain the dataset at `loc` itself now: no job of it is running
    here (after waiting up to `timeout` seconds for one that is); one still waiting is dropped
    (the caller does it instead)."""
    return _worker.take_over(loc.uri, timeout)


def request_fold(run: Location, retention: timedelta) -> None:
    """Ask for a fold of the journal of the run at `run` (`artstore.log.fold`), then compaction of
    its data tables; returns at once."""
    _worker.request(_Job(run, _FOLD, retention), key=run.child(_FOLD).uri)


def request_stats(run: Location, retention: timedelta) -> None:
    """Ask for a refresh of the stats of the run at `run` in its store's registry, due
    `run_stats.delay_s` from the first such request not yet served; returns at once."""
    _worker.request_stats(run, retention)


def wait(under: Location | None = None, timeout: float | None = None, stats: bool = True) -> bool:
    """Block until the cleanups asked for so far of the tables under `under` (a run's location;
    all tables when None) are done, and (with `stats`) their stats refreshes, made due now.
    Without `stats` a refresh not due yet stays waiting (benchmarks: upkeep as it runs between
    logs). False when `timeout` seconds passed first."""
    prefix = "" if under is None else under.uri.rstrip("/") + "/"
    return _worker.wait(prefix, timeout, stats)
