"""A run's committer (`artstore.log.group_commit`): the queue of the journal rows one process
logged to one run, and the thread that commits them in batches (`artstore.log.batch_commit`).

Each run has its own committer, so a run whose storage stops answering (a stalled bucket, its
requests retried for minutes) delays no other run's commits. A committer ends after IDLE_S
without rows; the next row queued starts one again. A batch is one fragment of the journal, so
it keeps the journal within the sync bound as a sync log does (`inline_upkeep.room`: it may
compact the journal first); it takes at most MAX_BATCH rows. Its commits start `spacing` apart:
further apart the more other processes commit to the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from artstore.log import batch_commit, fold, inline_upkeep
from artstore.storage import Location, barrier, writes

logger = logging.getLogger(__name__)

# The committer waits this long after a row arrives for more to join its commit, unless a read
# or flush of this process waits for it (a test's knob: 0 in normal use).
GATHER_S = 0.0
# A run's group commits start at least this far apart (seconds), unless a read or flush of this
# process waits for one: a log after a quiet spell commits at once, and logs that come faster
# join the next commit. Each commit costs ~5 ms of CPU whatever its size (Lance's commit, the
# upkeep it asks for), and on 2 cores that work slowed the caller's next logs: back-to-back small
# logs took 6.5 ms each with commits as fast as they came, 3.5 ms with 0.1 s (benchmarks/RESULTS.md,
# "group commits at most every 0.1 s"). Other processes see a log at most this much later, times
# the writers sharing the run (`spacing`).
COMMIT_INTERVAL_S = 0.1
# The longest `spacing` grows to (seconds): how late, at most, another process sees a log of a run
# many processes log to (unless COMMIT_INTERVAL_S is longer).
MAX_INTERVAL_S = 1.0
# The most logs one group commit holds (its one fragment): a fold round (`fold.MAX_LOGS`) always
# takes a whole commit, and a backlog (a committer that was stalled) commits in bounded pieces.
MAX_BATCH = fold.MAX_LOGS
IDLE_S = 5.0  # a run's committer thread ends after this long without rows (the next row starts one)
HISTORY = 256  # commits per run remembered for `group_commit.commits_since`
COND = threading.Condition()  # guards every queue; notified whenever one changes
# called by a committer right after each group commit of queued logs, before any waiting read goes
# on: (the run's journal, the version made, [(each log's record, its row address)])
ON_COMMIT: list[Callable[[Location, int, list[tuple[Any, int]]], None]] = []
ON_ROWS: list[Callable[[Location, list[pa.Table]], None]] = []  # `group_commit.on_rows`


class Queue:
    """The rows of one run this process queued, committed in ticket order."""

    def __init__(self, run: Location) -> None:
        self.run = run
        self.items: list[batch_commit.Item] = []  # queued, not taken yet
        self.busy: list[batch_commit.Item] = []  # being committed
        self.queued = 0  # tickets handed out
        self.done = 0  # every ticket up to this is committed
        self.finished = 0  # ... and its pending files deleted, its upkeep asked for
        self.errors = 0  # failed commit rounds (they are retried)
        self.rounds = 0  # commit rounds started
        self.failed_round = 0  # the latest round that failed
        self.error: BaseException | None = None
        self.reserved: dict[str, Any] = {}  # write_id -> record of a log whose pending file is being written
        # (version, physical rows, write_ids, time.monotonic() once landed) of this process's
        # recent commits, oldest first
        self.commits: deque[tuple[int, int, list[str], float]] = deque(maxlen=HISTORY)
        self.flying: dict[str, list[Any]] = {}  # data file -> records of its rows, of the batch being committed (`in_flight`)
        self.last_take = float("-inf")  # time.monotonic() the latest batch was taken (`spacing`)
        self.urgent = 0  # threads waiting for this queue's commit (the committer stops gathering)
        self.thread: threading.Thread | None = None  # its committer, None when it ended (idle)
        self.fragments: int | None = None  # the journal's fragments at this process's last commit
        self.dropped = False  # forgotten (`group_commit.drop_queued`): its committer ends
        self.version: int | None = None  # the journal version this process's latest group commit made
        self.committed_at = float("-inf")  # time.monotonic() it landed
        self.writers = 1.0  # the run's writers, as its latest commits tell (`spacing`)


def spacing(queue: Queue) -> float:
    """Seconds between the starts of the group commits of `queue`: COMMIT_INTERVAL_S per writer
    of its run, as the journal's versions between this process's last two commits tell
    (`_writers`). Every commit costs every writer of the run (a manifest to check out, a
    fragment's ids to read, compaction sooner): spaced so, a run that k processes log to takes
    about one commit per COMMIT_INTERVAL_S in all, each process committing about every k x
    COMMIT_INTERVAL_S, at most MAX_INTERVAL_S apart (4 writers on 2 cores: benchmarks/RESULTS.md,
    "Group commits spaced by the writers of a run"). A lone writer keeps COMMIT_INTERVAL_S."""
    return max(COMMIT_INTERVAL_S, min(MAX_INTERVAL_S, COMMIT_INTERVAL_S * queue.writers))


def _writers(previous: int | None, version: int, elapsed: float, interval: float) -> float:
    """The writers of a run as a committer sees them, >= 1: the journal versions from its previous
    commit (`previous`; None: none) to its latest (`version`), `elapsed` seconds apart, per
    `interval` (the spacing it kept) of that time. When every writer commits once per spacing
    (they keep the same one), each version between is one writer's commit. A committer that waited
    longer (no rows came) counts the versions of one spacing only: others' commits over a quiet
    spell of its own say little of how often they commit."""
    if previous is None or version <= previous:  # (fewer: the journal was made again)
        return 1.0
    return max(1.0, (version - previous) * interval / max(elapsed, interval))


def start(queue: Queue) -> None:
    """(Under COND) start the committer of `queue` unless it runs."""
    if queue.thread is not None and queue.thread.is_alive():
        return
    queue.thread = threading.Thread(target=_run, args=(queue,), daemon=True,
                                    name=f"artstore-group-commit {queue.run.redact(queue.run.uri)}")
    queue.thread.start()


def _run(queue: Queue) -> None:
    """The committer of `queue`: commits its rows in batches until it has none for
    IDLE_S, or the queue is dropped."""
    with barrier.bypass():
        while _take(queue):
            failed: BaseException | None = None
            try:
                version, physical = _commit(queue)
            except BaseException as e:  # noqa: BLE001 - kept pending and retried; waiters are told
                failed = e  # (whatever it was: this thread must not die with rows queued)
                logger.warning("group commit of %d logs of %s failed (retried): %s",
                               len(queue.busy), queue.run.redact(queue.run.uri), e)
            with COND:
                done = queue.busy
                if failed is None:
                    queue.done = done[-1].ticket
                else:
                    queue.items, queue.error = done + queue.items, failed
                    queue.errors += 1
                    queue.failed_round = queue.rounds
                queue.busy = []
                COND.notify_all()  # readers go on: the files and the upkeep need not wait
            if failed is not None:
                time.sleep(min(5.0, 0.05 * 2 ** min(queue.errors, 7)))
                continue
            try:
                batch_commit.after(queue.run, done, version, physical)
            except Exception as e:  # noqa: BLE001 - committed: a leftover file is skipped by recovery
                logger.warning("after the group commit of %s: %s", queue.run.redact(queue.run.uri), e)
            with COND:
                queue.finished = done[-1].ticket
                COND.notify_all()


def _take(queue: Queue) -> bool:
    """Move the next batch of `queue` to `queue.busy`: once rows came (and GATHER_S passed, and
    the queue's `spacing` since the previous batch was taken, unless someone waits), at most
    MAX_BATCH, once the journal has room for its fragment (`inline_upkeep.room`, which may compact
    it first). False, the committer to end, once none came for IDLE_S or the queue was dropped."""
    with COND:
        idle_until = time.monotonic() + IDLE_S
        while not queue.items or queue.dropped:
            left = idle_until - time.monotonic()
            if left <= 0 or queue.dropped:  # (a dropped queue's rows stay pending)
                queue.thread = None
                return False
            COND.wait(left)
        deadline = max(time.monotonic() + GATHER_S, queue.last_take + spacing(queue))
        while not queue.urgent and (left := deadline - time.monotonic()) > 0:
            COND.wait(left)  # gathering: a reader or flush waiting cuts it short
        retention = min(i.window for i in queue.items)
    try:
        queue.fragments = inline_upkeep.room(queue.run, queue.fragments, retention)
    except Exception as e:  # noqa: BLE001 - the bound is upkeep: its failure must not hold the rows
        logger.warning("compaction of the journal of %s before a group commit skipped: %s",
                       queue.run.redact(queue.run.uri), e)
        queue.fragments = None
    with COND:
        if queue.dropped:  # meanwhile
            queue.thread = None
            return False
        queue.busy, queue.items = queue.items[:MAX_BATCH], queue.items[MAX_BATCH:]
        queue.last_take = time.monotonic()
        queue.rounds += 1
    return True


def _commit(queue: Queue) -> tuple[int, int | None]:
    """Commit the rows `queue` took (`batch_commit.commit`), remember the commit for
    `commits_since` and tell the `on_commit` listeners. Returns (the version made, the journal's
    physical rows there: None when not known)."""

    def fly(records: dict[str, list[Any]]) -> None:  # a reader finding them committed before they are told takes them from here
        queue.flying = records

    version, rows = batch_commit.commit(queue.run, queue.busy, ON_COMMIT, fly)
    for hook in ON_ROWS:  # before the waiters are released: their reads find the rows
        try:
            hook(queue.run.child("logs.lance"), [i.row for i in queue.busy])
        except Exception as e:  # noqa: BLE001 - committed: a hook's failure must not make it retried
            logger.warning("after the group commit of %s: %s", queue.run.redact(queue.run.uri), e)
    queue.fragments = writes.committed_fragments(queue.run.child("logs.lance"), version)
    now = time.monotonic()
    queue.writers = _writers(queue.version, version, now - queue.committed_at, spacing(queue))
    queue.version, queue.committed_at = version, now
    for item in queue.busy:  # each caller's LogRecord now tells the version its log is in
        if getattr(item.record, "queued", False):  # (frozen: this one field is filled in once, here)
            object.__setattr__(item.record, "logs_version", version)
    if rows is not None:
        with COND:
            queue.commits.append((version, rows, [i.record.write_id for i in queue.busy], time.monotonic()))
    return version, rows
