"""Latest logs: a run's committed logs at its latest version, kept in memory per process.

Every read of a run starts from its committed logs (the all-or-nothing rule, `visibility`). Read
from storage that is a scan of the whole `logs` table: ~3.5 ms at 600 logs, growing with the
run. So each process keeps, per run, the newest `Snapshot` it read (`latest`):

- freshness: every call finds the logs table's latest version (a local run: Lance's version
  hint and a stat of its manifest, `datasets.latest_stamp`, ~0.1 ms; a bucket: opening it) and
  compares it with the snapshot's: unchanged, the snapshot serves as it is (a version never
  changes);
- changed since: only the fragments the snapshot did not read (new logs: one fragment each; a
  compaction's or payload drop's rewritten fragments, whose rows keep their sequence in
  commit_seq) are read, and joined with the rows of the fragments still there unchanged, in
  commit order; the first committed row of each log_id still wins;
- rows gone, or a log_id now another call's (a run deleted and logged again): the whole table
  is read again;
- only moved since (compactions, payload drops: `_moved`, told from the manifests alone): the
  snapshot's rows serve as they are, nothing is read; the moved rows' addresses are looked up
  when a step read needs them (`Snapshot.unresolved`);
- this process's own logs (`note_log`, called by `Model.log` right after its commit, which
  only notes them): at the next read their journal rows extend the snapshot of the versions
  before them, so the first read after the writer's own logs reads nothing (another writer's
  commit in between: that read reads what is new). A group commit's rows (`note_group_commit`,
  told by the committer thread) are noted alike: one version, one fragment per row.

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

from artstore.errors import ArtstoreError
from artstore.log import group_commit, journal
from artstore.log.visibility import check_logs_schema
from artstore.schema import arrow_schema
from artstore.storage import (
    Location,
    barrier,
    datasets,
    fragments,
    handles,
    key_columns,
    keys,
    writes,
)
from artstore.storage.keys import SEQ

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
                 earlier: dict[str, Any] | None = None, key: tuple[int, str] | None = None,
                 unresolved: frozenset[int] = frozenset()):
        self.loc = loc
        self.ds = ds  # the Lance dataset at `version`
        self.version: int = ds.version
        self.key = (ds.version, str(datasets.version_time(ds))) if key is None else key
        # fragments whose rows' addresses are not known (moved there by a rewrite since they were
        # read): those rows' `_rowaddr` is null
        self.unresolved = unresolved
        self.schema = schema
        self.identities = identities  # {fragment id: identity} at this version
        self.by_seq = by_seq
        self.is_journal = journal.is_journal(schema)
        self.committed = _sorted(by_seq.drop_columns(["_rowaddr"]), self.is_journal) if committed is None else committed
        self.appended = appended
        self.stamp: tuple[int, int] | None = None  # `datasets.latest_stamp` of a local run at `version`
        self._earlier = {} if earlier is None else earlier  # the answers of the snapshot `appended` extends
        # nothing appended: the same logs as the snapshot extended, so its answers are these
        self.derived: dict[str, Any] = self._earlier if appended is not None and appended.num_rows == 0 else {}
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
                self._tables[loc.uri] = datasets.open_dataset(loc)
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
        if wanted["_rowaddr"].null_count == 0:
            return fragments.take_rows(self.loc, self.ds, wanted["_rowaddr"].to_pylist(), columns)
        # Some rows moved since they were read: those by write_id (unique to one attempt's row),
        # from the fragments holding it (each fragment's key column is read once per process).
        known = wanted.filter(pc.is_valid(wanted["_rowaddr"]))
        moved = wanted.filter(pc.is_null(wanted["_rowaddr"]))["write_id"].to_pylist()
        read = None if columns is None else list(dict.fromkeys([*columns, "write_id"]))
        parts = [key_columns.rows_with(self.loc, self.ds, "write_id", moved, read)]
        if known.num_rows:
            parts.append(fragments.take_rows(self.loc, self.ds, known["_rowaddr"].to_pylist(), read))
        found = pa.concat_tables(parts)
        order = pc.index_in(wanted["write_id"], value_set=found["write_id"].combine_chunks())
        found = found.take(order)
        return found if columns is None else found.select(columns)


def _columns(schema: pa.Schema) -> list[str]:
    columns = journal.log_columns()
    if journal.is_journal(schema):  # its rows hold their metrics: history reads no other table
        columns = [*columns, "metric_names", "metric_values"]
    return [c for c in columns if c in schema.names]


def _read(loc: Location, ds: Any, schema: pa.Schema, fragment_ids: list[int] | None = None) -> pa.Table:
    """Committed rows of `ds` (of those fragments: first of each log_id among them), commit
    order, `_rowaddr` last."""
    if SEQ not in schema.names:  # a logs table made before commit_seq: no addresses
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
    barrier.wait(loc)  # this process's queued group logs land (and are noted) first
    if loc.uri in _NOTES:  # this process's own logs since the last read: extend the kept snapshot
        _fold_notes(loc)
    stamp = datasets.latest_stamp(loc)
    with _LOCK:
        old = _SNAPSHOTS.get(loc.uri)
        if old is not None and stamp is not None and old.stamp == stamp:  # a local run, unchanged
            _SNAPSHOTS.move_to_end(loc.uri)
            return old
    ds = datasets.open_dataset(loc)
    if ds is None:
        return None
    check_logs_schema(loc, ds)
    key = (ds.version, str(datasets.version_time(ds)))
    if old is not None and old.key == key:
        if stamp is not None and stamp[0] == ds.version:
            old.stamp = stamp  # (a noted snapshot, say): the next call costs one stat
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
    _keep(snapshot, lambda current: current.version <= snapshot.version)
    return snapshot


def _keep(snapshot: Snapshot, replaces: Callable[[Snapshot], bool]) -> None:
    """Keep `snapshot` as its run's newest, unless one is kept that `replaces` says to keep."""
    with _LOCK:
        current = _SNAPSHOTS.get(snapshot.loc.uri)
        if current is None or replaces(current):
            _SNAPSHOTS[snapshot.loc.uri] = snapshot
            _SNAPSHOTS.move_to_end(snapshot.loc.uri)
        while len(_SNAPSHOTS) > _MAX_RUNS:
            _SNAPSHOTS.popitem(last=False)


def _extended(loc: Location, ds: Any, schema: pa.Schema, old: Snapshot,
              identities: dict[int, tuple[Any, ...]]) -> Snapshot | None:
    """`old` brought to `ds` (a later version) reading only the fragments it lacks (new, or
    changed): new logs' rows, and rows a compaction rewrote (each keeps its sequence in
    commit_seq, and so its place). Rows of the fragments still there unchanged are kept; when
    rows only moved (`_moved`), nothing is read. None when rows `old` held are gone (then read
    the whole table)."""
    moved = _moved(old.identities, identities)
    if moved is not None:  # the same rows: `old`'s answers hold
        before, earlier = _base(old)
        return Snapshot(loc, ds, schema, identities, _unplaced(old.by_seq, moved[0]), old.committed,
                        old.committed.schema.empty_table() if before is None else before, earlier,
                        unresolved=(old.unresolved - moved[0]) | moved[1])
    # (rows of unresolved fragments are read again: their addresses)
    kept = [i for i, ident in old.identities.items() if identities.get(i) == ident and i not in old.unresolved]
    new = [i for i, ident in identities.items() if old.identities.get(i) != ident or i in old.unresolved]
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
        by_seq = by_seq.take(pc.sort_indices(by_seq, [(SEQ, "ascending"), ("_rowaddr", "ascending")]))
        keys = by_seq["log_id"].combine_chunks()
        first = pc.index_in(pc.unique(keys), value_set=keys)  # a retry's row in a new fragment goes
        if len(first) < by_seq.num_rows:
            by_seq = by_seq.take(first)
        if by_seq.num_rows != old.by_seq.num_rows + fresh.num_rows:  # rows went: unexpected, read again
            return None
    fresh = fresh.drop_columns(["_rowaddr"]).sort_by(ORDER)
    if fresh.num_rows == 0:
        return Snapshot(loc, ds, schema, identities, by_seq, old.committed, fresh, old.derived)
    return _appended(old, fresh, lambda committed, appended, earlier: Snapshot(
        loc, ds, schema, identities, by_seq, committed, appended, earlier)) or Snapshot(loc, ds, schema, identities, by_seq)


def _appended(old: Snapshot, fresh: pa.Table, make: Callable[[pa.Table, pa.Table, dict[str, Any]], Snapshot]) -> Snapshot | None:
    """`make(committed, appended, earlier)` of `old`'s committed logs followed by `fresh` (rows in
    the order of `Run.logs()`, all sorting after `old`'s: else None). When `old` derived nothing,
    what it extends is extended in turn (so logs noted one by one extend one answer)."""
    if old.committed.num_rows and not _before(old.committed.slice(old.committed.num_rows - 1), fresh.slice(0, 1)):
        return None
    fresh = fresh.replace_schema_metadata(old.committed.schema.metadata)
    before, earlier = _base(old)
    return make(_concat([old.committed, fresh]), fresh if before is None else _concat([before, fresh]), earlier)


def _base(old: Snapshot) -> tuple[pa.Table | None, dict[str, Any]]:
    """(the rows `old` appended to the snapshot whose answers it extends, those answers), or
    (None, `old`'s answers) when `old` derived some or extends none."""
    if old.derived or old.appended is None or not old._earlier:
        return None, old.derived
    return old.appended, old._earlier


def _concat(parts: list[pa.Table]) -> pa.Table:
    joined = pa.concat_tables(parts)
    return joined.combine_chunks() if joined.column(0).num_chunks > 64 else joined  # each extension adds a chunk


def _moved(before: dict[int, tuple[Any, ...]], identities: dict[int, tuple[Any, ...]],
           ours: dict[int, tuple[Any, ...]] | None = None) -> tuple[frozenset[int], frozenset[int]] | None:
    """(fragments gone, fragments new) when the fragments `identities` (a later version's) hold
    exactly the rows of `before` (a snapshot's: `Snapshot.identities`) and of `ours` (the
    fragments of this process's appends since, with
    their identities: one row each), moved: else None. Told from the manifests alone: a rewrite
    of the journal (compaction, payload drop) keeps every row (the journal has no deletes), gives
    its fragments new, higher ids, and removes the ones it read; any other commit's rows (an
    append, even one rewritten since) make the new fragments hold more rows than the gone ones
    held. A dataset made again reuses low ids, and is refused."""
    known = before if not ours else {**before, **ours}
    gone = frozenset(i for i, ident in known.items() if identities.get(i) != ident)
    new = frozenset(i for i, ident in identities.items() if known.get(i) != ident)
    top = max(before, default=-1)
    if any(i <= top or identities[i][1] != "None" for i in new) or any(known[i][1] != "None" for i in gone):
        return None
    if sum(identities[i][2] for i in new) != sum(known[i][2] for i in gone):
        return None
    return gone, new


def _unplaced(by_seq: pa.Table, gone: frozenset[int]) -> pa.Table:
    """`by_seq` with a null address for each row of a fragment in `gone` (moved elsewhere)."""
    if not gone:
        return by_seq
    address = by_seq["_rowaddr"]
    moved = pc.is_in(pc.shift_right(address, 32), value_set=pa.array(sorted(gone), pa.uint64()))
    return by_seq.set_column(by_seq.num_columns - 1, by_seq.schema.field("_rowaddr"),
                             pc.if_else(moved, pa.scalar(None, pa.uint64()), address))


class _Note:
    """One log this process committed to a journal, as `note_log` keeps it until the next read:
    its record, the version it made, its fragment (the highest of that version: a commit's one
    row), and the commit's time; the dataset at that version and its stamp while the handle the
    commit left still holds them (the newest note's serve the fold)."""

    __slots__ = ("record", "version", "fragment", "when", "ds", "stamp")

    def __init__(self, record: Any, version: int, fragment: int, when: Any, ds: Any, stamp: Any):
        self.record, self.version, self.fragment, self.when, self.ds, self.stamp = \
            record, version, fragment, when, ds, stamp


_NOTES: dict[str, list[_Note]] = {}  # logs uri -> this process's logs committed since the last read
_MAX_NOTES = 64  # notes kept per run before they are folded on the log path (bounds the first read after many logs)


def note_log(run_location: Location, record: Any) -> None:
    """Tell the kept logs that this process just committed `record` (a `LogRecord` with its
    `logs_version` and `write_id`; a retry's, which stored nothing, is ignored) to the run at
    `run_location`. Only noted here (a few dictionary look-ups: this runs in every log()); the
    next read of the run folds the notes into its kept snapshot (`_fold_notes`), so the first read
    after the writer's own logs reads nothing."""
    version, write_id = getattr(record, "logs_version", None), getattr(record, "write_id", None)
    if not record.created or version is None or write_id is None:
        return
    loc = run_location.child("logs.lance")
    found = writes.committed_seq_hi(loc, version)  # (commit time, its highest fragment: ours)
    if found is None and version == 1:  # the commit that made the table: its one fragment, the first
        found = (None, 0)
    _note(loc, version, [(record, None if found is None else found[1])], None if found is None else found[0])


def note_group_commit(loc: Location, version: int, rows: list[tuple[Any, int]]) -> None:
    """`note_log` for a group commit (`artstore.log.group_commit.on_commit`, in the committer
    thread): this process committed the logs `rows` ([(record, its row's fragment id)], one
    fragment each) to the journal at `loc` in one commit, `version`."""
    found = writes.committed_seq_hi(loc, version)
    _note(loc, version, rows, None if found is None else found[0])


def _note(loc: Location, version: int, rows: list[tuple[Any, int | None]], when: Any) -> None:
    """Keep the notes of `rows` ([(record, fragment id: None when not known)]) of `version`."""
    with _LOCK:
        notes = _NOTES.get(loc.uri)
        if notes is None and loc.uri not in _SNAPSHOTS and version != 1:
            return  # nothing kept to extend, and not the run's first log: the next read reads
        if any(fragment is None for _, fragment in rows):  # not this process's commit as it knows it:
            _NOTES.pop(loc.uri, None)  # the next read reads what is new
            return
        if notes is None:
            notes = _NOTES[loc.uri] = []
        for older in notes[-1:]:  # only the newest note's dataset is needed
            older.ds = older.stamp = None
        for record, fragment in rows[:-1]:
            notes.append(_Note(record, version, fragment, when, None, None))
        notes.append(_Note(rows[-1][0], version, rows[-1][1], when, handles.held(loc, version),
                           handles.stamp(loc, version)))
        full = len(notes) > _MAX_NOTES
    if full:
        _fold_notes(loc)


def _fold_notes(loc: Location) -> None:
    """Extend the kept snapshot of the logs table at `loc` by this process's noted logs
    (`note_log`), reading nothing: the newest note's version's manifest tells the fragments.
    Only when every fragment that version holds beyond the snapshot's and the notes' own holds
    rows that were moved there (`_moved`: a compaction or payload drop rewrote them); else
    (another writer's commit in between, an unknown history) the kept snapshot stays, and the
    read reads what is new. The run's first log (version 1, which made the table) starts it."""
    with _LOCK:
        notes = _NOTES.pop(loc.uri, None)
        old = _SNAPSHOTS.get(loc.uri)
    if not notes:
        return
    # commit order: a group commit's notes share a version, its rows in fragment order
    notes = sorted((n for n in notes if old is None or n.version > old.version), key=lambda n: (n.version, n.fragment))
    if not notes or (old is None and notes[0].version != 1) or (old is not None and not old.is_journal):
        return
    last = notes[-1]
    try:
        ds = last.ds if last.ds is not None else handles.held(loc, last.version)
        if ds is None and last.version == 1:
            ds = datasets.open_dataset(loc, version=1)
        if ds is None and (newer := handles.held(loc)) is not None and newer.version > last.version:
            ds = newer.checkout_version(last.version)  # a later version is held now: read this one's manifest
        if ds is None:
            return
        schema = ds.schema
        if not journal.is_journal(schema) or SEQ not in schema.names or (old is not None and old.schema != schema):
            return
        identities = fragments.fragment_identities(loc, ds)
    except (ArtstoreError, OSError, ValueError, RuntimeError):  # e.g. cleaned up meanwhile: the read reads it
        return
    top = -1 if old is None else max(old.identities, default=-1)
    ours: dict[int, tuple[Any, ...]] = {}
    for n in notes:  # each a one-row fragment above the snapshot's; still there, or moved since
        here = identities.get(n.fragment)
        if n.fragment <= top or n.fragment in ours or (here is not None and (here[1] != "None" or here[2] != 1)):
            return
        ours[n.fragment] = here if here is not None else ((), "None", 1)
    moved = _moved({} if old is None else old.identities, identities, ours)
    if moved is None:
        return
    row_schema = pa.schema([*(schema.field(c) for c in _columns(schema)), pa.field("_rowaddr", pa.uint64())],
                           schema.metadata) if old is None else old.by_seq.schema
    rows = pa.Table.from_pylist([_row(n) for n in notes], schema=row_schema)  # commit order
    key = (last.version, str(datasets.version_time(ds) if last.when is None else last.when))
    if old is None:
        snapshot = Snapshot(loc, ds, schema, identities, _unplaced(rows, moved[0]), key=key, unresolved=moved[1])
    else:
        by_seq = _unplaced(_concat([old.by_seq, rows]), moved[0])
        # in the order of `Run.logs()` (`_before`'s keys): most often commit order already (a
        # sort_by takes every column, ~0.5 ms)
        order = sorted(range(len(notes)), key=lambda i: (notes[i].record.recorded_at, notes[i].record.log_id.encode()))
        fresh = rows.drop_columns(["_rowaddr"])
        snapshot = _appended(old, fresh if order == list(range(len(notes))) else fresh.take(order),
                             lambda committed, appended, earlier: Snapshot(
                                 loc, ds, schema, identities, by_seq, committed, appended, earlier, key=key,
                                 unresolved=(old.unresolved - moved[0]) | moved[1]))
        if snapshot is None:
            return
    snapshot.stamp = last.stamp if last.ds is not None else handles.stamp(loc, last.version)
    _keep(snapshot, lambda current: current is old)


def _row(note: _Note) -> dict[str, Any]:
    """The kept row (`Snapshot.by_seq`) of a noted log: its journal row's log columns, in its
    fragment (offset 0)."""
    record, values = note.record, dict(note.record.metrics)
    return {
        "log_id": record.log_id, "write_id": record.write_id, "split": record.split, "step": record.step,
        "num_groups": record.num_groups, "num_trajectories": record.num_trajectories,
        "num_exceptions": record.num_exceptions, "num_metrics": len(values), "table_versions": None,
        "recorded_at": record.recorded_at, SEQ: note.fragment, "metric_names": list(values),
        "metric_values": list(values.values()), "_rowaddr": note.fragment << 32,
    }


def _before(a: pa.Table, b: pa.Table) -> bool:
    """Whether the one row of `a` sorts before the one row of `b` in the order of `Run.logs()`."""
    ka = (a["recorded_at"][0].value, a["log_id"][0].as_py().encode())  # Arrow compares strings bytewise
    kb = (b["recorded_at"][0].value, b["log_id"][0].as_py().encode())
    return ka < kb


group_commit.on_commit(note_group_commit)
