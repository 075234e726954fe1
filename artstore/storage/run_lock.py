"""Locks shared by the processes of one host that write to one local run: each is an advisory
`flock` on a file in `{run}/.locks/`, so several writers of a run take turns at one thing (their
Lance commits to its journal, or its compaction) instead of racing at it.

Why: Lance settles a race between two commits of a dataset by failing one, which reads the other's
transaction and retries after a backoff sleep (tens of ms); two compactions of the same fragments
do the whole rewrite twice and one is thrown away. Waiting a few ms for a lock costs less.

A lock never decides correctness: Lance's own commit protocol still does (a bucket, or another
host on a shared disk, takes no lock and races as before). The kernel drops a lock when its
process dies (SIGKILL included), so a crash never leaves one held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from artstore.storage.location import Location

DIR = ".locks"


@contextlib.contextmanager
def held(run: Location, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock `name` of the run at `run` for the block: yields True once held (with `wait`,
    after waiting for its holder), False when another holds it and not `wait`, or when the lock
    file cannot be made (then the block runs unlocked, as on a bucket, which always yields True)."""
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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # (closing the file releases the lock)
