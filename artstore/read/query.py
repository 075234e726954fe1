"""The state of one `Store.sql` call: the runs it may read, a `RunSnapshot` (`artstore.read.scan`)
per run it reads, values computed once per query, the versions read (also those read through the
store's pool of small runs: `artstore.read.pool_scan`, `Query.pool_stamp`), the readers it opened,
and the first error a scan raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from artstore.log import registry, run_pool
from artstore.read.scan import RunSnapshot
from artstore.storage import failures

if TYPE_CHECKING:  # the facade calls this service, never the other way
    from artstore.read.store import Store


class Query:
    """The state of one `Store.sql` call: the runs it may read (listed on first use), a snapshot
    per run it reads, values computed once per query, the readers it opened (closed by `close`),
    and the first error a scan raised."""

    def __init__(self, store: Store, as_of: Any, projects: Sequence[str] | None = None,
                 runs: Sequence[str] | None = None):
        self.store = store
        self.as_of = as_of
        self.projects = None if projects is None else list(projects)
        self.only = None if runs is None else set(runs)  # "project/model": the views hold these runs only
        self.error: BaseException | None = None
        self._runs: dict[str, RunSnapshot] = {}
        self._keys: list[str] | None = None
        self._cache: dict[tuple, Any] = {}
        self._checks: dict[str, dict[str, Any]] | None = None  # "project/model" -> its commit-check counts
        # its own lock: taken under a snapshot's lock, and `_lock` is held while snapshots are read (`cached`)
        self._checks_lock = threading.Lock()
        self._pool_stamps: dict[str, tuple[int, int] | None] = {}  # key -> its logs (version, mtime_ns)
        self._pooled: dict[str, dict[str, int]] = {}  # key -> versions read through the store's pool
        self._open: list[Any] = []
        self._lock = threading.RLock()

    def keys(self) -> list[str]:
        """The runs ("project/model", sorted) of the store (or of `projects`, `runs`), listed once."""
        with self._lock:
            if self._keys is None:
                # the registry's names, not Store.runs(): no Run objects (nor their module's imports)
                # for runs the store's pool answers
                found = registry.read(self.store.location)
                if found is None:
                    found = registry.walk(self.store.location)
                keys = [f"{p}/{m}" for p, m in found if self.projects is None or p in self.projects]
                self._keys = [k for k in keys if self.only is None or k in self.only]
            return self._keys

    def snapshot(self, key: str) -> RunSnapshot:
        with self._lock:
            if key not in self._runs:
                spec = self.as_of.get(key) if isinstance(self.as_of, dict) else self.as_of
                stamp = self._pool_stamps.get(key) if key in self._pooled else None
                self._runs[key] = RunSnapshot(self.store.run(*key.split("/")), spec, lambda: self.registered(key),
                                              logs_version=None if stamp is None else stamp[0])
            return self._runs[key]

    def pool_stamp(self, key: str) -> tuple[int, int] | None:
        """(version, manifest mtime_ns) of the run `key`'s latest logs, decided once per query: every
        view reads the run at that version, from the pool or its own tables (then pinned there).
        None: the run is read otherwise (as_of, a bucket, its own logs pinned without the pool)."""
        with self._lock:
            if key in self._runs and key not in self._pooled:
                return None
            if key not in self._pool_stamps:
                self._pool_stamps[key] = None if self.as_of is not None else \
                    run_pool.logs_stamp(self.store.location, *key.split("/"))
            return self._pool_stamps[key]

    def note_pooled(self, key: str, table: str, logs_version: int, table_version: int) -> None:  # for `versions`
        with self._lock:
            self._pooled.setdefault(key, {}).update({"logs": logs_version, table: table_version})

    def registered(self, key: str) -> dict[str, Any] | None:
        """The run `key`'s commit-check counts in the store's registry (`registry.COMMIT_CHECK`;
        None when it has none), read once per query, at the first run that needs them."""
        with self._checks_lock:
            if self._checks is None:
                found = registry.read_stats(self.store.location)
                self._checks = {} if found is None else {
                    f"{r['project']}/{r['model']}": r
                    for r in found.select(["project", "model", *registry.COMMIT_CHECK]).to_pylist()}
            return self._checks.get(key)

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

    def track(self, closable: Any) -> Any:
        """Register a reader or generator, closed by `close` (a scan DuckDB stopped early leaves
        it open)."""
        with self._lock:
            self._open.append(closable)
        return closable

    def guard(self, table: str, key: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`noting` `batches`, a storage failure raised as a StorageError naming the run's table."""
        def named() -> Iterator[pa.RecordBatch]:
            with failures.storage_errors(self.store.run(*key.split("/")).table_location(table), "read"):
                yield from batches
        return self.noting(named())

    def noting(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches`, the first error they raise kept as the query's error (DuckDB re-raises it as
        its own; `Store.sql` raises that one, or retries)."""
        try:
            yield from batches
        except BaseException as e:
            if not isinstance(e, GeneratorExit):
                self.error = self.error or e
            raise

    def close(self) -> None:
        """Close what the query's scans opened, newest first: generators, then Lance readers."""
        with self._lock:
            opened, self._open = self._open, []
        for closable in reversed(opened):
            closable.close()

    def versions(self) -> dict[str, dict[str, int]]:
        read = {k: {**self._pooled.get(k, {}), **(s.read if (s := self._runs.get(k)) else {})}
                for k in {*self._pooled, *self._runs}}
        return {k: dict(sorted(v.items())) for k, v in sorted(read.items()) if v}
