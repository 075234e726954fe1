"""Latest logs: a run's committed logs at its latest version, kept in memory per process.

Every read of a run starts from its committed logs (the all-or-nothing rule, `visibility`). Read
from storage that is a scan of the whole `logs` table: ~3.5 ms at 600 logs, growing with the
run. So each process keeps, per run, the newest `Snapshot` it read (`latest`):

- freshness: every call finds the logs table's latest version (a local run: Lance's version
  hint and a stat of its manifest, `tables.latest_stamp`, ~0.1 ms; a bucket: opening it) and
  compares it with the snapshot's: unchanged, the snapshot serves as it is (a version never
  changes);
- appended since: when every fragment of the snapshot is still there unchanged and every other
  fragment has a higher id (appends only: each log is one new fragment), only the new fragments
  are read, and their rows join the snapshot's; the first committed row of each log_id still
  wins (a new fragment commits after every old one);
- anything else (a compaction rewrote fragments, a run deleted and logged again) reads the whole
  table again.

A snapshot is immutable; answers derived from it (e.g. `Run.history()`) are kept on it, once
per version (`Snapshot.derived`). Row addresses are valid for the snapshot's version only, and
are read through its dataset (`payloads`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import journal
from artstore.log.visibility import check_logs_schema
from artstore.schema import arrow_schema
from artstore.storage import Location, fragments, tables

_SNAPSHOTS: OrderedDict[str, Snapshot] = OrderedDict()  # logs uri -> newest snapshot read
_MAX_RUNS = 64
_LOCK = threading.Lock()
ORDER = [("recorded_at", "ascending"), ("log_id", "ascending")]  # the order of `Run.logs()`


class Snapshot:
    """The committed logs of a run at one version of its `logs` table."""

    def __init__(self, loc: Location, ds: Any, identities: dict[int, tuple[Any, ...]], by_seq: pa.Table):
        self.loc = loc
        self.ds = ds  # the Lance dataset at `version`
        self.version: int = ds.version
        self.key = (ds.version, str(tables.version_time(ds)))
        self.identities = identities  # {fragment id: identity} at this version
        self.by_seq = by_seq  # committed rows in commit order, with `_rowaddr` last
        self.is_journal = journal.is_journal(ds.schema)
        self.committed = _sorted(by_seq.drop_columns(["_rowaddr"]), self.is_journal)
        self.stamp: tuple[int, int] | None = None  # `tables.latest_stamp` of a local run at `version`
        self.derived: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._tables: dict[str, Any] = {}  # data table uri -> its dataset (`table`)

    def derive(self, name: str, make: Callable[[], Any]) -> Any:
        """`make()`, computed once per snapshot under `name` (it must depend on the snapshot only)."""
        with self._lock:
            if name not in self.derived:
                self.derived[name] = make()
            return self.derived[name]

    def table(self, loc: Location) -> Any:
        """The Lance dataset of a data table of the run (at `loc`), opened once per snapshot, after
        it was read: it holds every row the snapshot's logs folded into it."""
        with self._lock:
            if loc.uri not in self._tables:
                self._tables[loc.uri] = tables.open_dataset(loc)
            return self._tables[loc.uri]

    def payloads(self, write_ids: list[str], columns: list[str] | None = None) -> pa.Table:
        """`columns` (all when None) of the journal rows of the committed logs with these
        write_ids, in commit order, read by row address at this version."""
        wanted = self.by_seq.filter(pc.is_in(self.by_seq["write_id"], value_set=pa.array(write_ids, pa.string())))
        if wanted.num_rows == 0:
            empty = arrow_schema("logs").empty_table()
            return empty if columns is None else empty.select(columns)
        return fragments.take_rows(self.loc, self.ds, wanted["_rowaddr"].to_pylist(), columns)


def _columns(ds: Any) -> list[str]:
    columns = journal.log_columns()
    if journal.is_journal(ds.schema):  # its rows hold their metrics: history reads no other table
        columns = [*columns, "metric_names", "metric_values"]
    return [c for c in columns if c in ds.schema.names or c == tables.SEQ]


def _read(loc: Location, ds: Any, fragment_ids: list[int] | None = None) -> pa.Table:
    """Committed rows of `ds` (of those fragments), commit order, `_rowaddr` last."""
    columns = _columns(ds)
    if tables.SEQ not in ds.schema.names:  # a logs table made before commit_seq: no addresses
        raise _NoSnapshot
    return tables.first_per_key(loc, ds, "log_id", columns=columns, fragment_ids=fragment_ids, with_address=True)


def _sorted(by_seq: pa.Table, is_journal: bool) -> pa.Table:
    found = by_seq.sort_by(ORDER)
    return journal.mark(found) if is_journal else found


class _NoSnapshot(Exception):
    """The logs table cannot be kept as a snapshot (it predates commit_seq)."""


def latest(loc: Location) -> Snapshot | None:
    """The snapshot of the logs table at `loc` at its latest version, None when the run has no
    logs table or it predates commit_seq (the caller reads it as before)."""
    stamp = tables.latest_stamp(loc)
    with _LOCK:
        old = _SNAPSHOTS.get(loc.uri)
        if old is not None and stamp is not None and old.stamp == stamp:  # a local run, unchanged
            _SNAPSHOTS.move_to_end(loc.uri)
            return old
    ds = tables.open_dataset(loc)
    if ds is None:
        return None
    check_logs_schema(loc, ds)
    key = (ds.version, str(tables.version_time(ds)))
    if old is not None and old.key == key:
        with _LOCK:
            _SNAPSHOTS.move_to_end(loc.uri)
        return old
    try:
        identities = fragments.fragment_identities(loc, ds)
        snapshot = None
        if old is not None and old.version < ds.version and old.ds.schema == ds.schema:
            snapshot = _extended(loc, ds, old, identities)
        if snapshot is None:
            snapshot = Snapshot(loc, ds, identities, _read(loc, ds))
    except _NoSnapshot:
        return None
    if stamp is not None and stamp[0] == ds.version:
        snapshot.stamp = stamp
    with _LOCK:
        current = _SNAPSHOTS.get(loc.uri)
        if current is None or current.version <= snapshot.version:
            _SNAPSHOTS[loc.uri] = snapshot
            _SNAPSHOTS.move_to_end(loc.uri)
        while len(_SNAPSHOTS) > _MAX_RUNS:
            _SNAPSHOTS.popitem(last=False)
    return snapshot


def _extended(loc: Location, ds: Any, old: Snapshot, identities: dict[int, tuple[Any, ...]]) -> Snapshot | None:
    """`old` plus the rows of the fragments appended since, or None when more than appends
    happened (a fragment of `old` changed or went, or a new one has a lower id)."""
    if any(identities.get(i) != ident for i, ident in old.identities.items()):
        return None
    new = [i for i in identities if i not in old.identities]
    if old.identities and new and min(new) <= max(old.identities):
        return None
    if not new:
        return Snapshot(loc, ds, identities, old.by_seq)
    found = _read(loc, ds, new)
    found = found.filter(pc.invert(pc.is_in(found["log_id"], value_set=old.by_seq["log_id"].combine_chunks())))
    by_seq = pa.concat_tables([old.by_seq, found]) if old.by_seq.num_rows else found
    return Snapshot(loc, ds, identities, by_seq)
