"""A hook that lets a writer holding commits in flight make readers of this process wait for them.

`datasets` calls `wait(loc)` before it opens the latest version of a dataset (its four ways to:
`open_dataset` at no version, `open_latest`, `latest_stamp`, and `arrow_dataset`'s kept latest).
A writer that returns before its rows are committed (`artstore.log.group_commit`) registers a
hook that, for its dataset, waits until what this process queued is committed: read-your-writes
inside the process. With no hook registered a call costs one truthiness test.

The hooks' own threads (the committer, and threads that must not wait on it) run under
`bypass()`, so a commit never waits on itself; a read that opens one dataset several times runs
the hooks once, then opens under `bypass()`. A read that takes the writer's queued rows as they
are (`artstore.read.latest_logs.beyond`) runs the hooks under `no_wait()`: they do what else they
do (look for a killed writer's rows), but do not wait.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from artstore.storage.location import Location

_HOOKS: list[Callable[[Location], None]] = []
_LOCAL = threading.local()


def add(hook: Callable[[Location], None]) -> None:
    """Call `hook(loc)` before each open of the latest version of the dataset at `loc`."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)


def wait(loc: Location) -> None:
    """Run the hooks for `loc` (each may block until this process's commits of it land)."""
    if _HOOKS and not bypassed():
        for hook in _HOOKS:
            hook(loc)


def bypassed() -> bool:
    """Whether the calling thread is inside `bypass()`."""
    return getattr(_LOCAL, "off", False)


def waiting() -> bool:
    """Whether a hook may wait on the calling thread (not inside `no_wait()`)."""
    return not getattr(_LOCAL, "no_wait", False)


@contextlib.contextmanager
def _flag(name: str) -> Iterator[None]:
    """Set the calling thread's flag `name` meanwhile (nested uses restore the outer value)."""
    before = getattr(_LOCAL, name, False)
    setattr(_LOCAL, name, True)
    try:
        yield
    finally:
        setattr(_LOCAL, name, before)


def bypass() -> contextlib.AbstractContextManager[None]:
    """Opens on this thread skip the hooks (a committer's own reads, a writer's id look-up)."""
    return _flag("off")


def no_wait() -> contextlib.AbstractContextManager[None]:
    """Hooks run on this thread meanwhile do not wait for commits in flight (`waiting()` is False)."""
    return _flag("no_wait")
