"""ByteLRU: a least-recently-used map of Arrow tables bounded by bytes, what a process keeps in
memory of rows it read or wrote (`artstore.read.payload_cache`, `artstore.storage.written_rows`).

Each entry holds its size in bytes, given with it or else the table's `nbytes`, so the total is
exact without measuring a table twice. After every `put` and `trim` the total is at most the
bound: the least recently used entries go first, the one just put last (one larger than the bound
goes too, with every entry older than it). Only `get` and `put` make an entry the most recently
used; `peek` leaves it where it is, `demote` makes it the first to go. Each method holds the map's
lock, so threads (callers' reads, the group-commit thread, the upkeep thread) may share one map.
Tables are kept as given: no copy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import pyarrow as pa

K = TypeVar("K", bound=Hashable)


class ByteLRU(Generic[K]):
    """Tables by key, the total of their sizes (bytes) at most `max_bytes()` after each `put`."""

    def __init__(self, max_bytes: Callable[[], int]) -> None:
        """`max_bytes`: the bound in bytes, asked at each `put` (a module constant a test may patch)."""
        self._max_bytes = max_bytes
        self._entries: OrderedDict[K, tuple[pa.Table, int]] = OrderedDict()  # least recently used first
        self._bytes = 0  # sum of the entries' sizes
        self._lock = threading.Lock()

    def get(self, key: K) -> pa.Table | None:
        """The table kept under `key`, now the most recently used; None when none is."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def peek(self, key: K) -> pa.Table | None:
        """The table kept under `key` (its place in the order unchanged); None when none is."""
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, table: pa.Table, nbytes: int | None = None) -> None:
        """Keep `table` under `key` (replacing what was there) as the most recently used, its size
        `nbytes` (default `table.nbytes`); then drop the least recently used while the total is
        past the bound."""
        size = table.nbytes if nbytes is None else nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (table, size)
            self._bytes += size
            self._trim()

    def trim(self) -> None:
        """Drop the least recently used while the total is past the bound (`put` does it itself;
        this for a bound lowered since, with nothing to put)."""
        with self._lock:
            self._trim()

    def _trim(self) -> None:
        """(Under the lock) `trim`."""
        bound = self._max_bytes()
        while self._bytes > bound and self._entries:
            self._bytes -= self._entries.popitem(last=False)[1][1]

    def demote(self, key: K) -> None:
        """Make the entry under `key` the least recently used, the first to go (none: nothing)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key, last=False)

    def pop(self, key: K) -> pa.Table | None:
        """Remove the entry under `key`; its table, or None when none was kept."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._bytes -= entry[1]
            return entry[0]

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """The total of the kept entries' sizes, in bytes."""
        return self._bytes

    def keys(self) -> list[K]:
        """The kept keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
