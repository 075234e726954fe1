"""Locks shared by the processes of one host that write to one local run: each is an advisory
`flock` on a file in `{run}/.locks/`, so several writers of a run take turns at one thing (their
Lance commits to its journal, or its compaction) instead of racing at it.

Why: Lance settles a race between two commits of a dataset by failing one, which reads the other's
transaction and retries after a backoff sleep (tens of ms); two compactions of the same fragments
do the whole rewrite twice and one is thrown away. Waiting a few ms for a lock costs less.

A lock never decides correctness: Lance's own commit protocol still does (a bucket, or another
host on a shared disk, takes no lock and races as before). So a waiter gives up after MAX_WAIT_S
and goes on unlocked: a holder that is stopped (SIGSTOP, a debugger) delays the others, never
blocks them. The kernel drops a lock when its process dies (SIGKILL included).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from artstore.storage.location import Location

DIR = ".locks"
MAX_WAIT_S = 5.0  # a waiter goes on without the lock after this long (see the module doc)
_POLL_S = (0.001, 0.002, 0.005)  # waits between tries, the last repeated


@contextlib.contextmanager
def held(run: Location, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock `name` of the run at `run` for the block: yields True once held (with `wait`,
    after waiting up to MAX_WAIT_S for its holder), False when another holds it (then the block
    runs unlocked: a caller that must not race skips its work). On a bucket, or when the lock
    file cannot be made, the block runs unlocked and it yields True."""
    if not run.is_local:
        yield True
        return
    path = os.path.join(run.uri, DIR, name)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # e.g. a read-only run folder: nothing to coordinate with
        yield True
        return
    try:
        yield _take(fd, MAX_WAIT_S if wait else 0.0)
    finally:
        os.close(fd)  # (closing the file releases the lock)


def _take(fd: int, wait_s: float) -> bool:
    """Whether the lock on `fd` was taken within `wait_s` seconds (tries every few ms)."""
    deadline, tries = time.monotonic() + wait_s, 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(_POLL_S[min(tries, len(_POLL_S) - 1)])
        tries += 1
