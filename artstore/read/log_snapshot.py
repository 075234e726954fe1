"""Log snapshot: a run's committed logs at one version of its `logs` table, as this process keeps
them in memory (the newest per run, `kept` / `keep`), and the rules for extending one by rows
committed since without reading the rows it holds again.

A snapshot is immutable; answers derived from it (e.g. `Run.history()`) are kept on it, once per
version (`Snapshot.derive`). Row addresses are valid for the snapshot's version only, and are read
through its dataset (`Snapshot.payloads`). `artstore.read.latest_logs` makes snapshots by reading,
`artstore.read.log_notes` from this process's own commits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import journal
from artstore.read import payload_cache
from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, fragments, key_columns

ORDER = [("recorded_at", "ascending"), ("log_id", "ascending")]  # the order of `Run.logs()`
_SNAPSHOTS: OrderedDict[str, Snapshot] = OrderedDict()  # logs uri -> newest snapshot kept
_MAX_RUNS = 64
LOCK = threading.Lock()  # guards the kept snapshots (and `log_notes`' notes)


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
        self.committed = sorted_logs(by_seq.drop_columns(["_rowaddr"]), self.is_journal) if committed is None else committed
        self.appended = appended
        self.stamp: tuple[int, int] | None = None  # `datasets.latest_stamp` of a local run at `version`
        # (inode, mtime) of the `_versions/` folder while `version` is known to be the latest (`datasets.versions_stamp`)
        self.folder: tuple[int, int] | None = None
        self._earlier = {} if earlier is None else earlier  # the answers of the snapshot `appended` extends
        # nothing appended: the same logs as the snapshot extended, so its answers are these
        self.derived: dict[str, Any] = self._earlier if appended is not None and appended.num_rows == 0 else {}
        self._lock = threading.Lock()
        self._tables: dict[str, Any] = {}  # data table uri -> its dataset (`table`)
        # name -> (the logs beyond this snapshot it was made with, the answer): `derive_beyond`
        self._beyond: dict[str, tuple[tuple[str, ...], Any]] = {}
        # name -> the `extend` of the last `derive` of it on this run's snapshots (`derive_ahead`)
        self.extenders: dict[str, Callable[[Any, pa.Table], Any]] = {}

    def derive(self, name: str, make: Callable[[pa.Table], Any],
               extend: Callable[[Any, pa.Table], Any] | None = None) -> Any:
        """`make(committed)`, computed once per snapshot under `name`; or, when this snapshot
        extends one that computed it, `extend(its answer, appended rows)`, which must equal
        `make` of all the rows (or be None: then `make` runs)."""
        with self._lock:
            if extend is not None:
                self.extenders[name] = extend
            if name not in self.derived:
                before = self._earlier.get(name)
                found = None
                if extend is not None and before is not None and self.appended is not None:
                    found = extend(before, self.appended)
                self.derived[name] = make(self.committed) if found is None else found
            return self.derived[name]

    def derive_ahead(self) -> None:
        """Make now, by extension, each answer the snapshot this one extends holds and whose
        `extend` is known (e.g. in a writer's background thread, so that the next read finds it
        made). Nothing that would need `make`."""
        for name, extend in list(self.extenders.items()):
            with self._lock:
                before = self._earlier.get(name)
                if name in self.derived or before is None or self.appended is None:
                    continue
                found = extend(before, self.appended)
                if found is not None:
                    self.derived[name] = found

    def derive_beyond(self, name: str, ids: tuple[str, ...], make: Callable[[], Any]) -> Any:
        """`make()`, an answer of this snapshot's logs and some more (their ids `ids`: e.g. this
        process's logs not committed yet), kept for the last `ids` asked under `name`."""
        with self._lock:
            found = self._beyond.get(name)
            if found is not None and found[0] == ids:
                return found[1]
        answer = make()
        with self._lock:
            self._beyond[name] = (ids, answer)
        return answer

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
        if columns is None or "write_id" not in columns:
            return self._payloads(wanted, columns)
        # Rows read before answer as they are (`payload_cache`); only the others are taken.
        ids = wanted["write_id"].to_pylist()
        kept = payload_cache.get(self.loc.uri, ids, columns)
        if len(kept) < len(ids):
            read = self._payloads(wanted.filter(pc.invert(pc.is_in(
                wanted["write_id"], value_set=pa.array(list(kept), pa.string())))), columns)
            payload_cache.keep(self.loc.uri, read)
            if not kept:
                return read
            kept.update(zip(read["write_id"].to_pylist(), (read.slice(i, 1) for i in range(read.num_rows)), strict=True))
        return pa.concat_tables([kept[w] for w in ids])

    def _payloads(self, wanted: pa.Table, columns: list[str] | None) -> pa.Table:
        """`payloads` of the rows `wanted` (of `by_seq`), read from storage."""
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


def kept(uri: str) -> Snapshot | None:
    """The newest snapshot kept of the logs table at `uri` (under `LOCK`)."""
    return _SNAPSHOTS.get(uri)


def touch(uri: str) -> None:
    """Mark the run's snapshot as recently used (under `LOCK`)."""
    _SNAPSHOTS.move_to_end(uri)


def keep(snapshot: Snapshot, replaces: Callable[[Snapshot], bool]) -> None:
    """Keep `snapshot` as its run's newest, unless one is kept that `replaces` says to keep."""
    with LOCK:
        current = _SNAPSHOTS.get(snapshot.loc.uri)
        if current is None or replaces(current):
            if current is not None and not snapshot.extenders:
                snapshot.extenders = current.extenders  # (one per run: the same functions)
            _SNAPSHOTS[snapshot.loc.uri] = snapshot
            _SNAPSHOTS.move_to_end(snapshot.loc.uri)
        while len(_SNAPSHOTS) > _MAX_RUNS:
            _SNAPSHOTS.popitem(last=False)


def columns(schema: pa.Schema) -> list[str]:
    """The columns a snapshot keeps of a logs table with `schema`."""
    names = journal.log_columns()
    if journal.is_journal(schema):  # its rows hold their metrics: history reads no other table
        names = [*names, "metric_names", "metric_values"]
    return [c for c in names if c in schema.names]


def sorted_logs(by_seq: pa.Table, is_journal: bool) -> pa.Table:
    """Committed rows in the order of `Run.logs()` (marked as a journal's)."""
    found = by_seq.sort_by(ORDER)
    return journal.mark(found) if is_journal else found


def appended(old: Snapshot, fresh: pa.Table, make: Callable[[pa.Table, pa.Table, dict[str, Any]], Snapshot]) -> Snapshot | None:
    """`make(committed, appended, earlier)` of `old`'s committed logs followed by `fresh` (rows in
    the order of `Run.logs()`, all sorting after `old`'s: else None). When `old` derived nothing,
    what it extends is extended in turn (so logs noted one by one extend one answer)."""
    if old.committed.num_rows and not before(old.committed.slice(old.committed.num_rows - 1), fresh.slice(0, 1)):
        return None
    fresh = fresh.replace_schema_metadata(old.committed.schema.metadata)
    rows, earlier = base(old)
    return make(concat([old.committed, fresh]), fresh if rows is None else concat([rows, fresh]), earlier)


def base(old: Snapshot) -> tuple[pa.Table | None, dict[str, Any]]:
    """(the rows `old` appended to the snapshot whose answers it extends, those answers), or
    (None, `old`'s answers) when `old` derived some or extends none."""
    if old.derived or old.appended is None or not old._earlier:
        return None, old.derived
    return old.appended, old._earlier


def concat(parts: list[pa.Table]) -> pa.Table:
    joined = pa.concat_tables(parts)
    return joined.combine_chunks() if joined.column(0).num_chunks > 64 else joined  # each extension adds a chunk


def moved(known_before: dict[int, tuple[Any, ...]], identities: dict[int, tuple[Any, ...]],
          ours: dict[int, tuple[Any, ...]] | None = None) -> tuple[frozenset[int], frozenset[int]] | None:
    """(fragments gone, fragments new) when the fragments `identities` (a later version's) hold
    exactly the rows of `known_before` (a snapshot's: `Snapshot.identities`) and of `ours` (the
    fragments of this process's appends since, with their identities), moved: else
    None. Told from the manifests alone: a rewrite of the journal (compaction, payload drop) keeps
    every row (the journal has no deletes), gives its fragments new, higher ids, and removes the
    ones it read; any other commit's rows (an append, even one rewritten since) make the new
    fragments hold more rows than the gone ones held. A dataset made again reuses low ids, and is
    refused."""
    known = known_before if not ours else {**known_before, **ours}
    gone = frozenset(i for i, ident in known.items() if identities.get(i) != ident)
    new = frozenset(i for i, ident in identities.items() if known.get(i) != ident)
    top = max(known_before, default=-1)
    if any(i <= top or identities[i][1] != "None" for i in new) or any(known[i][1] != "None" for i in gone):
        return None
    if sum(identities[i][2] for i in new) != sum(known[i][2] for i in gone):
        return None
    return gone, new


def unplaced(by_seq: pa.Table, gone: frozenset[int]) -> pa.Table:
    """`by_seq` with a null address for each row of a fragment in `gone` (moved elsewhere)."""
    if not gone:
        return by_seq
    address = by_seq["_rowaddr"]
    moved_rows = pc.is_in(pc.shift_right(address, 32), value_set=pa.array(sorted(gone), pa.uint64()))
    return by_seq.set_column(by_seq.num_columns - 1, by_seq.schema.field("_rowaddr"),
                             pc.if_else(moved_rows, pa.scalar(None, pa.uint64()), address))


def before(a: pa.Table, b: pa.Table) -> bool:
    """Whether the one row of `a` sorts before the one row of `b` in the order of `Run.logs()`."""
    ka = (a["recorded_at"][0].value, a["log_id"][0].as_py().encode())  # Arrow compares strings bytewise
    kb = (b["recorded_at"][0].value, b["log_id"][0].as_py().encode())
    return ka < kb
