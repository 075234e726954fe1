"""Latest logs: a run's committed logs at its latest version, kept in memory per process.

Every read of a run starts from its committed logs (the all-or-nothing rule, `visibility`). Read
from storage that is a scan of the whole `logs` table: ~3.5 ms at 600 logs, growing with the
run. So each process keeps, per run, the newest `Snapshot` it read (`latest`):

- freshness: every call finds the logs table's latest version (a local run: Lance's version
  hint and a stat of its manifest, `tables.latest_stamp`, ~0.1 ms; a bucket: opening it) and
  compares it with the snapshot's: unchanged, the snapshot serves as it is (a version never
  changes);
- changed since: only the fragments the snapshot did not read (new logs: one fragment each; a
  compaction's or payload drop's rewritten fragments, whose rows keep their sequence in
  commit_seq) are read, and joined with the rows of the fragments still there unchanged, in
  commit order; the first committed row of each log_id still wins;
- rows gone, or a log_id now another call's (a run deleted and logged again): the whole table
  is read again.

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
from artstore.storage import Location, fragments, keys, tables

_SNAPSHOTS: OrderedDict[str, Snapshot] = OrderedDict()  # logs uri -> newest snapshot read
_MAX_RUNS = 64
_LOCK = threading.Lock()
ORDER = [("recorded_at", "ascending"), ("log_id", "ascending")]  # the order of `Run.logs()`


class Snapshot:
    """The committed logs of a run at one version of its `logs` table.

    `by_seq`: the committed rows in commit order with their row addresses (`_rowaddr`, last);
    `committed`: the same rows in the order of `Run.logs()`; `appended`: when this snapshot is an
    earlier one's `committed` followed by some rows (new logs sorting after all others: the
    usual case), those rows, so that derived answers extend instead of being made again."""

    def __init__(self, loc: Location, ds: Any, schema: pa.Schema, identities: dict[int, tuple[Any, ...]],
                 by_seq: pa.Table, committed: pa.Table | None = None, appended: pa.Table | None = None,
                 earlier: dict[str, Any] | None = None):
        self.loc = loc
        self.ds = ds  # the Lance dataset at `version`
        self.version: int = ds.version
        self.key = (ds.version, str(tables.version_time(ds)))
        self.schema = schema
        self.identities = identities  # {fragment id: identity} at this version
        self.by_seq = by_seq
        self.is_journal = journal.is_journal(schema)
        self.committed = _sorted(by_seq.drop_columns(["_rowaddr"]), self.is_journal) if committed is None else committed
        self.appended = appended
        self.stamp: tuple[int, int] | None = None  # `tables.latest_stamp` of a local run at `version`
        self.derived: dict[str, Any] = {}
        self._earlier = earlier or {}  # the derived answers of the snapshot `appended` extends
        self._lock = threading.Lock()
        self._tables: dict[str, Any] = {}  # data table uri -> its dataset (`table`)

    def derive(self, name: str, make: Callable[[pa.Table], Any],
               extend: Callable[[Any, pa.Table], Any] | None = None) -> Any:
        """`make(committed)`, computed once per snapshot under `name`; or, when this snapshot
        extends one that computed it, `extend(its answer, appended rows)`, which must equal
        `make` of all the rows (or be None: then `make` runs)."""
        with self._lock:
            if name not in self.derived:
                before = self._earlier.get(name)
                found = None
                if extend is not None and before is not None and self.appended is not None:
                    found = extend(before, self.appended)
                self.derived[name] = make(self.committed) if found is None else found
            return self.derived[name]

    def table(self, loc: Location) -> Any:
        """The Lance dataset of a data table of the run (at `loc`), opened once per snapshot, after
        it was read: it holds every row the snapshot's logs folded into it."""
        with self._lock:
            if loc.uri not in self._tables:
                self._tables[loc.uri] = tables.open_dataset(loc)
            return self._tables[loc.uri]

    def forget_tables(self) -> None:
        """Open the data tables afresh next time (`table`): files of the versions opened went."""
        with self._lock:
            self._tables.clear()

    def payloads(self, write_ids: list[str], columns: list[str] | None = None) -> pa.Table:
        """`columns` (all when None) of the journal rows of the committed logs with these
        write_ids, in commit order, read by row address at this version."""
        wanted = self.by_seq.filter(pc.is_in(self.by_seq["write_id"], value_set=pa.array(write_ids, pa.string())))
        if wanted.num_rows == 0:
            empty = arrow_schema("logs").empty_table()
            return empty if columns is None else empty.select(columns)
        return fragments.take_rows(self.loc, self.ds, wanted["_rowaddr"].to_pylist(), columns)


def _columns(schema: pa.Schema) -> list[str]:
    columns = journal.log_columns()
    if journal.is_journal(schema):  # its rows hold their metrics: history reads no other table
        columns = [*columns, "metric_names", "metric_values"]
    return [c for c in columns if c in schema.names]


def _read(loc: Location, ds: Any, schema: pa.Schema, fragment_ids: list[int] | None = None) -> pa.Table:
    """Committed rows of `ds` (of those fragments: first of each log_id among them), commit
    order, `_rowaddr` last."""
    if tables.SEQ not in schema.names:  # a logs table made before commit_seq: no addresses
        raise _NoSnapshot
    return keys.first_per_key(loc, ds, "log_id", columns=_columns(schema), fragment_ids=fragment_ids,
                                with_address=True)


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
    schema = ds.schema  # converted from Lance's on each access: once
    try:
        identities = fragments.fragment_identities(loc, ds)
        snapshot = None
        if old is not None and old.version < ds.version and old.schema == schema:
            snapshot = _extended(loc, ds, schema, old, identities)
        if snapshot is None:
            snapshot = Snapshot(loc, ds, schema, identities, _read(loc, ds, schema))
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


def _extended(loc: Location, ds: Any, schema: pa.Schema, old: Snapshot,
              identities: dict[int, tuple[Any, ...]]) -> Snapshot | None:
    """`old` brought to `ds` (a later version) reading only the fragments it lacks (new, or
    changed): new logs' rows, and rows a compaction rewrote (each keeps its sequence in
    commit_seq, and so its place). Rows of the fragments still there unchanged are kept. None
    when rows `old` held are gone (then read the whole table)."""
    kept = [i for i, ident in old.identities.items() if identities.get(i) == ident]
    new = [i for i, ident in identities.items() if old.identities.get(i) != ident]  # or changed
    found = _read(loc, ds, schema, new) if new else old.by_seq.schema.empty_table()
    # Logs not in `old` (first of each: a log's first row commits before any retry's, so a
    # log_id `old` holds keeps its row there), the rest rewritten rows of logs `old` holds.
    old_ids = old.by_seq["log_id"].combine_chunks()
    held = pc.is_in(found["log_id"], value_set=old_ids)
    fresh = found.filter(pc.invert(held))
    again = found.filter(held)  # rows of logs `old` holds, rewritten: the same log calls, or read anew
    if again.num_rows and not pc.all(pc.equal(
            again["write_id"], old.by_seq["write_id"].take(pc.index_in(again["log_id"], value_set=old_ids)))).as_py():
        return None  # another call of the same log_id (a run deleted and logged again, say)
    if len(kept) == len(old.identities) and (not new or not kept or min(new) > max(kept)):
        by_seq = pa.concat_tables([old.by_seq, fresh]) if fresh.num_rows else old.by_seq
    else:
        fragment = pc.shift_right(old.by_seq["_rowaddr"], 32)
        still = old.by_seq.filter(pc.is_in(fragment, value_set=pa.array(kept, pa.uint64())))
        by_seq = pa.concat_tables([still, found])
        by_seq = by_seq.take(pc.sort_indices(by_seq, [(tables.SEQ, "ascending"), ("_rowaddr", "ascending")]))
        keys = by_seq["log_id"].combine_chunks()
        first = pc.index_in(pc.unique(keys), value_set=keys)  # a retry's row in a new fragment goes
        if len(first) < by_seq.num_rows:
            by_seq = by_seq.take(first)
        if by_seq.num_rows != old.by_seq.num_rows + fresh.num_rows:  # rows went: unexpected, read again
            return None
    fresh = fresh.drop_columns(["_rowaddr"]).sort_by(ORDER)
    if fresh.num_rows == 0:
        return Snapshot(loc, ds, schema, identities, by_seq, old.committed, fresh, old.derived)
    last, first = old.committed.slice(old.committed.num_rows - 1), fresh.slice(0, 1)
    if old.committed.num_rows == 0 or _before(last, first):
        committed = pa.concat_tables([old.committed, fresh.replace_schema_metadata(old.committed.schema.metadata)])
        if committed.column(0).num_chunks > 64:  # each extension adds a chunk
            committed = committed.combine_chunks()
        return Snapshot(loc, ds, schema, identities, by_seq, committed, fresh, old.derived)
    return Snapshot(loc, ds, schema, identities, by_seq)


def _before(a: pa.Table, b: pa.Table) -> bool:
    """Whether the one row of `a` sorts before the one row of `b` in the order of `Run.logs()`."""
    ka = (a["recorded_at"][0].value, a["log_id"][0].as_py().encode())  # Arrow compares strings bytewise
    kb = (b["recorded_at"][0].value, b["log_id"][0].as_py().encode())
    return ka < kb
