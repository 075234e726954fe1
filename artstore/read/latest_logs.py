"""Latest logs: a run's committed logs at its latest version, kept in memory per process.

Every read of a run starts from its committed logs (the all-or-nothing rule, `visibility`). Read
from storage that is a scan of the whole `logs` table: ~3.5 ms at 600 logs, growing with the
run. So each process keeps, per run, the newest snapshot it read (`latest`; the snapshot and its
extension rules: `artstore.read.log_snapshot`):

- freshness: every call finds the logs table's latest version (a local run: Lance's version
  hint and a stat of its manifest, `datasets.latest_stamp`, ~0.1 ms; a bucket: opening it) and
  compares it with the snapshot's: unchanged, the snapshot serves as it is (a version never
  changes);
- changed since: only the fragments the snapshot did not read (new logs: one fragment per sync
  log or group commit; a compaction's or payload drop's rewritten fragments, whose rows keep
  their sequence in commit_seq) are read, and joined with the rows of the fragments still there
  unchanged, in commit order; the first committed row of each log_id still wins;
- rows gone, or a log_id now another call's (a run deleted and logged again): the whole table
  is read again;
- only moved since (compactions, payload drops: `log_snapshot.moved`, told from the manifests
  alone): the snapshot's rows serve as they are, nothing is read; the moved rows' addresses are
  looked up when a step read needs them (`Snapshot.unresolved`);
- this process's own committed logs (`artstore.read.log_notes`): at the next read they extend the
  snapshot of the versions before them, so the first read after the writer's own logs reads
  nothing (another writer's commit in between: that read reads what is new);
- this process's group logs not committed yet: a read that can take them as records
  (`Run.history()`: `beyond`) or as their journal rows (one step's groups: `latest_of_step`) gets
  the snapshot and those instead of waiting for their commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import group_commit
from artstore.log.visibility import check_logs_schema
from artstore.read import log_notes, log_snapshot
from artstore.read.log_snapshot import LOCK, ORDER, Snapshot
from artstore.storage import Location, barrier, datasets, fragments, keys, transactions
from artstore.storage.keys import SEQ

__all__ = ["ORDER", "Snapshot", "beyond", "latest", "latest_of_step"]


def _read(loc: Location, ds: Any, schema: pa.Schema, fragment_ids: list[int] | None = None) -> pa.Table:
    """Committed rows of `ds` (of those fragments: first of each log_id among them), commit
    order, `_rowaddr` last."""
    if SEQ not in schema.names:  # a logs table made before commit_seq: no addresses
        raise _NoSnapshot
    return keys.first_per_key(loc, ds, "log_id", columns=log_snapshot.columns(schema), fragment_ids=fragment_ids,
                                with_address=True)


def _read_new(loc: Location, ds: Any, schema: pa.Schema, new: list[int], identities: dict[int, tuple[Any, ...]],
              row_schema: pa.Schema, top: int) -> pa.Table:
    """`_read` of the fragments `new`, but the fragments of this process's own commits are made
    from their records, not read: those whose every row is noted and not folded yet
    (`log_notes.noted`, by row address: only fragment ids above `top`, the snapshot's highest, as
    an append's are), and those of a group commit that landed and is not told yet
    (`group_commit.in_flight`, by data file)."""
    flying = group_commit.in_flight(loc)
    notes = log_notes.noted(loc.uri) if log_notes.pending(loc.uri) else {}
    known: dict[int, list[Any]] = {}
    for i in new if flying or notes else ():
        paths, deletion, rows = identities[i]
        if deletion != "None" or len(paths) != 1:
            continue
        records = [notes.get(fragments.row_address(i, k)) for k in range(rows)] if i > top else []
        if not records or any(r is None for r in records):  # not all noted: landed, not told yet?
            records = flying.get(paths[0], [])
        if len(records) == rows:
            known[i] = records
    if not known:
        return _read(loc, ds, schema, new)
    rest = [i for i in new if i not in known]
    made = [log_notes.row(record, fragments.row_address(i, k))
            for i, records in sorted(known.items()) for k, record in enumerate(records)]
    parts = [pa.Table.from_pylist(made, schema=row_schema)]
    if rest:
        parts.insert(0, _read(loc, ds, schema, rest).cast(row_schema))
    found = pa.concat_tables(parts)
    found = found.take(pc.sort_indices(found, [(SEQ, "ascending"), ("_rowaddr", "ascending")]))
    ids = found["log_id"].combine_chunks()
    first = pc.index_in(pc.unique(ids), value_set=ids)  # first committed row of each log_id
    return found.take(first) if len(first) < found.num_rows else found


class _NoSnapshot(Exception):
    """The logs table cannot be kept as a snapshot (it predates commit_seq)."""


def latest(loc: Location) -> Snapshot | None:
    """The snapshot of the logs table at `loc` at its latest version, None when the run has no
    logs table or it predates commit_seq (the caller reads it as before)."""
    barrier.wait(loc)  # this process's queued group logs land (and are noted) first
    with barrier.bypass():  # one barrier check per read: the opens below skip it
        return _latest(loc)


def latest_of_step(loc: Location, split: str | None, step: int) -> tuple[Snapshot, list[tuple[Any, pa.Table]]] | None:
    """`latest(loc)` for a read of one step's logs (of `split`; None: any), without waiting for
    this process's queued group logs: with the (record, journal row) of those of that step (and
    split) the snapshot does not hold, in queue order. They commit after every log the snapshot
    holds, in queue order, so the snapshot's logs then these are the step's logs in commit order.
    One the snapshot holds (committed since, or another writer's first copy of its log_id) is
    left out: the first committed row wins. None as `latest`."""
    queued = [(record, row) for record, row in group_commit.queued_rows(loc)  # before the snapshot
              if record.step == step and split in (None, record.split)]
    snapshot = _unwaited(loc)
    if snapshot is None:
        return None
    return snapshot, (_not_held(snapshot, queued, lambda q: q[0].log_id) if snapshot.is_journal else queued)


def _unwaited(loc: Location) -> Snapshot | None:
    """`_latest(loc)` without waiting for this process's queued group logs (a killed writer's
    rows are still looked for: `barrier.no_wait`)."""
    with barrier.no_wait():
        barrier.wait(loc)
    with barrier.bypass():
        return _latest(loc)


def _not_held(snapshot: Snapshot, queued: list[Any], log_id: Callable[[Any], str]) -> list[Any]:
    """`queued` less the items whose log_id (`log_id(item)`) `snapshot` holds: committed since
    they were listed (ours, or another writer's first copy: the first committed row wins)."""
    if not queued:
        return queued
    held = pc.is_in(snapshot.by_seq["log_id"], value_set=pa.array([log_id(q) for q in queued], pa.string()))
    if not pc.any(held).as_py():
        return queued
    gone = set(snapshot.by_seq["log_id"].filter(held).to_pylist())
    return [q for q in queued if log_id(q) not in gone]


def beyond(loc: Location) -> tuple[Snapshot, list[Any]] | None:
    """`latest(loc)` without waiting for this process's group logs of the run still queued (not
    committed), with the records (`LogRecord`) of those it does not hold, in the order of
    `Run.logs()`: they sort after all of its logs (else this waits, as `latest`, and gives none).
    What a read that can take logs as records (`Run.history()`) needs to see every log this
    process returned from, without waiting for their commit. None as `latest`."""
    queued = group_commit.queued(loc)  # before the snapshot: a row committed since is in it
    if not queued:
        found = latest(loc)
        return None if found is None else (found, [])
    snapshot = _unwaited(loc)
    if snapshot is None or not snapshot.is_journal:
        found = latest(loc)
        return None if found is None else (found, [])
    queued = _not_held(snapshot, queued, lambda r: r.log_id)
    queued.sort(key=lambda r: (r.recorded_at, r.log_id.encode()))  # Arrow compares strings bytewise
    committed = snapshot.committed
    if queued and committed.num_rows:
        last = (committed["recorded_at"][committed.num_rows - 1].as_py(),
                committed["log_id"][committed.num_rows - 1].as_py().encode())
        if last >= (queued[0].recorded_at, queued[0].log_id.encode()):  # not after them: as `latest`
            found = latest(loc)
            return None if found is None else (found, [])
    return snapshot, queued


def _latest(loc: Location) -> Snapshot | None:
    stamp = folder = None
    for _ in range(2):  # (again when a group commit of ours was told meanwhile: it landed as we looked)
        if log_notes.pending(loc.uri):  # this process's own logs since the last read: extend the kept snapshot
            log_notes.fold(loc)
        folder = datasets.versions_stamp(loc)  # taken before the check it may stand for
        with LOCK:
            old = log_snapshot.kept(loc.uri)
            if old is not None and folder is not None and old.folder == folder[:2]:  # no version since: one stat
                log_snapshot.touch(loc.uri)
                return old
        stamp = datasets.latest_stamp(loc)
        with LOCK:
            old = log_snapshot.kept(loc.uri)
            if old is not None and stamp is not None and old.stamp == stamp:  # a local run, unchanged
                old.folder = _settled(folder)
                log_snapshot.touch(loc.uri)
                return old
        if not log_notes.pending(loc.uri):
            break
    ds = datasets.open_dataset(loc)
    if ds is None:
        return None
    check_logs_schema(loc, ds)
    key = (ds.version, str(datasets.version_time(ds)))
    if old is not None and old.key == key:
        if stamp is not None and stamp[0] == ds.version:
            old.stamp = stamp  # (a noted snapshot, say): the next call costs one stat
        with LOCK:
            log_snapshot.touch(loc.uri)
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
        snapshot.stamp, snapshot.folder = stamp, _settled(folder)
    log_snapshot.keep(snapshot, lambda current: current.version <= snapshot.version)
    return snapshot


def _settled(folder: tuple[int, int, int] | None) -> tuple[int, int] | None:
    """The (inode, mtime) of `folder` (a `datasets.versions_stamp` taken before the latest
    version was confirmed) when it may stand for that version: its mtime was older than a clock
    tick when taken, so any version made since moves it."""
    if folder is None or folder[2] - folder[1] <= datasets.VERSIONS_TICK_NS:
        return None
    return folder[0], folder[1]


def _extended(loc: Location, ds: Any, schema: pa.Schema, old: Snapshot,
              identities: dict[int, tuple[Any, ...]]) -> Snapshot | None:
    """`old` brought to `ds` (a later version) reading only the fragments it lacks (new, or
    changed): new logs' rows, and rows a compaction rewrote (each keeps its sequence in
    commit_seq, and so its place). Rows of the fragments still there unchanged are kept; when
    rows only moved (`log_snapshot.moved`), nothing is read. None when rows `old` held are gone (then read
    the whole table)."""
    moved = log_snapshot.moved(old.identities, identities)
    if moved is not None:  # the same rows: `old`'s answers hold
        before, earlier = log_snapshot.base(old)
        return Snapshot(loc, ds, schema, identities, log_snapshot.unplaced(old.by_seq, moved[0]), old.committed,
                        old.committed.schema.empty_table() if before is None else before, earlier,
                        unresolved=(old.unresolved - moved[0]) | moved[1])
    if any(identities.get(i) != ident for i, ident in old.identities.items()):  # rows moved, and more
        found = _appended_beside_moves(loc, ds, schema, old, identities)
        if found is not None:
            return found
    # Rows whose addresses are not known (moved by a rewrite) stay so while every fragment holding
    # them is unchanged (a step read looks them up); else those fragments are read again.
    settled = all(identities.get(i) == old.identities.get(i) for i in old.unresolved)
    unresolved = old.unresolved if settled else frozenset()
    kept = [i for i, ident in old.identities.items() if identities.get(i) == ident and (settled or i not in old.unresolved)]
    new = [i for i, ident in identities.items() if old.identities.get(i) != ident or (i in old.unresolved and not settled)]
    found = _read_new(loc, ds, schema, new, identities, old.by_seq.schema, max(old.identities, default=-1)) if new \
        else old.by_seq.schema.empty_table()
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
        still = pc.is_in(fragment, value_set=pa.array(kept, pa.uint64()))
        still = old.by_seq.filter(pc.or_kleene(still, pc.is_null(fragment)) if unresolved else still)
        by_seq = pa.concat_tables([still, found])
        by_seq = by_seq.take(pc.sort_indices(by_seq, [(SEQ, "ascending"), ("_rowaddr", "ascending")]))
        ids = by_seq["log_id"].combine_chunks()
        first = pc.index_in(pc.unique(ids), value_set=ids)  # a retry's row in a new fragment goes
        if len(first) < by_seq.num_rows:
            by_seq = by_seq.take(first)
        if by_seq.num_rows != old.by_seq.num_rows + fresh.num_rows:  # rows went: unexpected, read again
            return None
    fresh = fresh.drop_columns(["_rowaddr"]).sort_by(ORDER)
    if fresh.num_rows == 0:
        return Snapshot(loc, ds, schema, identities, by_seq, old.committed, fresh, old.derived, unresolved=unresolved)
    return log_snapshot.appended(old, fresh, lambda committed, appended, earlier: Snapshot(
        loc, ds, schema, identities, by_seq, committed, appended, earlier, unresolved=unresolved)) or \
        Snapshot(loc, ds, schema, identities, by_seq, unresolved=unresolved)


def _appended_beside_moves(loc: Location, ds: Any, schema: pa.Schema, old: Snapshot,
                           identities: dict[int, tuple[Any, ...]]) -> Snapshot | None:
    """`old` brought to `ds` when the versions since only appended fragments (another writer's
    logs: read) and compacted others (rows `old` holds, moved: not read), as their transactions
    tell (`transactions.appended_since`: a few manifest reads, fewer bytes than the rows a
    compaction moved). None when that cannot be told, or an appended fragment is gone again,
    or holds a log `old` holds (then `_extended` reads what it does not know)."""
    appended = transactions.appended_since(ds, old.version)
    if not appended or not appended <= identities.keys():
        return None
    moved = log_snapshot.moved(old.identities, identities, {i: identities[i] for i in appended})
    if moved is None:
        return None
    found = _read_new(loc, ds, schema, sorted(appended), identities, old.by_seq.schema, max(old.identities, default=-1))
    if pc.any(pc.is_in(found["log_id"], value_set=old.by_seq["log_id"].combine_chunks())).as_py():
        return None  # another call of a log_id `old` holds: read again
    by_seq = pa.concat_tables([log_snapshot.unplaced(old.by_seq, moved[0]), found.cast(old.by_seq.schema)])
    unresolved = (old.unresolved - moved[0]) | moved[1]
    fresh = found.drop_columns(["_rowaddr"]).sort_by(ORDER)
    if fresh.num_rows == 0:
        return Snapshot(loc, ds, schema, identities, by_seq, unresolved=unresolved)
    return log_snapshot.appended(old, fresh, lambda committed, added, earlier: Snapshot(
        loc, ds, schema, identities, by_seq, committed, added, earlier, unresolved=unresolved)) or \
        Snapshot(loc, ds, schema, identities, by_seq, unresolved=unresolved)
