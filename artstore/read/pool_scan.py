"""The share of a view scan read from the store's pool of small runs' rows (`artstore.log.run_pool`).

For a query at the latest version, a run whose pool copy is of its current logs version (the
version and manifest mtime the copy was stamped with, checked with the version hint and two
stats, no dataset open) is read from the pool: one Lance scan for all such runs, the view's
filter pushed in whole (the pool holds `project` and `model` as columns). Every other run is
read from its own tables by the caller. The query records, per pooled run, the logs version and
the table version the copy was read from, so `versions_read` names versions that read the same
rows again; and the run's logs stay pinned at that version for the query's other views
(`Query.pool_stamp`, `Query.snapshot`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import run_pool
from artstore.read.query import Query
from artstore.storage import datasets, failures

# (pool uri, version, commit time) -> {"project/model": [(logs version, mtime_ns, table version, generation)]}
_COVERAGE: OrderedDict[tuple[str, int, str], dict[str, list[tuple[int, int, int, str]]]] = OrderedDict()
_COVERAGE_MAX = 64
_LOCK = threading.Lock()


class PoolShare:
    """The runs (`keys`) of one view scan read from the pool, and their copies' generations."""

    def __init__(self, table: str, ds: Any, uri: Any, generations: list[str], keys: set[str]):
        self.table, self._ds, self._loc = table, ds, uri
        self.keys = keys
        self._generations = pa.array(sorted(generations), pa.string())

    def batches(self, query: Query, out: pa.Schema, filter: Any, named: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The pooled runs' rows passing `filter` (which names the columns `named`), with the
        columns of `out` (the view's). The filter runs in Arrow, as on a run's small table
        (`small_tables`): the same expressions pass, and the pool is small."""
        columns = list(dict.fromkeys([*out.names, *named, run_pool.GENERATION]))
        with failures.storage_errors(self._loc, "read"):
            reader = query.track(self._ds.scanner(columns=columns).to_reader())
            for batch in reader:
                batch = batch.filter(pc.is_in(batch.column(run_pool.GENERATION), value_set=self._generations))
                if filter is not None:
                    batch = batch.filter(filter)
                if not out.names:
                    yield pa.RecordBatch.from_pydict({"_": pa.nulls(batch.num_rows)}).select([])  # count(*)
                else:
                    yield pa.RecordBatch.from_arrays([batch.column(c) for c in out.names], schema=out)


def share(query: Query, table: str, keys: Sequence[str]) -> PoolShare | None:
    """The runs of `keys` that the pool answers for `table` in this query (None: none)."""
    if query.as_of is not None or table not in run_pool.TABLES or not query.store.location.is_local:
        return None
    loc = run_pool.location(query.store.location, table)
    found = datasets.arrow_dataset(loc)
    if found is None:
        return None
    ds, version = found
    coverage = _coverage(loc.uri, ds)
    chosen: dict[str, tuple[int, int, int, str]] = {}
    for key in keys:
        copies = coverage.get(key)
        if not copies:
            continue
        stamp = query.pool_stamp(key)
        fresh = sorted(c for c in copies if stamp is not None and (c[0], c[1]) == stamp)
        if fresh:
            chosen[key] = fresh[0]  # two racing copies of one version: either holds the same rows
    if not chosen:
        return None
    for key, (logs_version, _, table_version, _) in chosen.items():
        query.note_pooled(key, table, logs_version, table_version)
    return PoolShare(table, ds, loc, [c[3] for c in chosen.values()], set(chosen))


def _coverage(uri: str, ds: Any) -> dict[str, list[tuple[int, int, int, str]]]:
    """The copies one version of a pool table holds, per run; kept per version (never changes)."""
    key = (uri, ds.version, str(ds.get_version()["timestamp"]))
    with _LOCK:
        found = _COVERAGE.get(key)
    if found is not None:
        return found
    t = ds.to_table(columns=["project", "model", *run_pool.STAMP])
    found = {}
    if t.num_rows:
        stamps = t.group_by(["project", "model", *run_pool.STAMP]).aggregate([])
        columns = [stamps[c].to_numpy(zero_copy_only=False) for c in ["project", "model", *run_pool.STAMP]]
        for project, model, logs_version, mtime, table_version, generation in zip(*columns, strict=True):
            found.setdefault(f"{project}/{model}", []).append(
                (int(logs_version), int(mtime), int(table_version), str(generation)))
    with _LOCK:
        _COVERAGE[key] = found
        while len(_COVERAGE) > _COVERAGE_MAX:
            _COVERAGE.popitem(last=False)
    return found


def clear() -> None:
    """Forget the coverage kept (tests that rewrite a pool in place)."""
    with _LOCK:
        _COVERAGE.clear()

