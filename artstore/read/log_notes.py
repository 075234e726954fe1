"""Log notes: this process's own committed logs, noted so that the kept snapshot of the run's logs
(`artstore.read.log_snapshot`) extends by them without reading them back.

`note_log` (called by `Model.log` right after its commit) and `note_group_commit` (told by the
group committer, `artstore.log.group_commit.on_commit`: one version, one fragment, a row per
log) only record the logs; the next read of the run (`latest_logs.latest`) folds every note at once
(`fold`), and the log path folds them past `_MAX_NOTES` (bounding the first read after many
logs). The fold reads nothing: the newest note's version's manifest tells the fragments. Only
when every fragment that version holds beyond the snapshot's and the notes' own holds rows that
were moved there (a compaction or payload drop) is the snapshot extended; another writer's commit
in between leaves the snapshot as it is, and the read reads what is new. Rows recovered from a
crashed writer are not noted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from artstore.errors import ArtstoreError
from artstore.log import group_commit, journal
from artstore.read import log_snapshot
from artstore.read.log_snapshot import LOCK, Snapshot
from artstore.storage import Location, datasets, fragments, handles, writes
from artstore.storage.keys import SEQ


class _Note:
    """One log this process committed to a journal, as `note_log` keeps it until the next read:
    its record, the version it made, its row's address (fragment id << 32 | offset: a sync log's
    is the one row of the highest fragment of its version), and the commit's time; the dataset at
    that version and its stamp while the handle the commit left still holds them (the newest
    note's serve the fold)."""

    __slots__ = ("record", "version", "address", "when", "ds", "stamp")

    def __init__(self, record: Any, version: int, address: int, when: Any, ds: Any, stamp: Any):
        self.record, self.version, self.address, self.when, self.ds, self.stamp = \
            record, version, address, when, ds, stamp

    @property
    def fragment(self) -> int:
        return fragments.address_parts(self.address)[0]


_NOTES: dict[str, list[_Note]] = {}  # logs uri -> this process's logs committed since the last read
_MAX_NOTES = 64  # notes kept per run before they are folded on the log path (bounds the first read after many logs)


def pending(uri: str) -> bool:
    """Whether logs of the logs table at `uri` are noted and not folded yet."""
    return uri in _NOTES


def noted(uri: str) -> dict[int, Any]:
    """{row address: record} of the logs of the logs table at `uri` noted and not folded yet."""
    with LOCK:
        return {n.address: n.record for n in _NOTES.get(uri, ()) if n.record is not None}


def note_log(run_location: Location, record: Any) -> None:
    """Tell the kept logs that this process just committed `record` (a `LogRecord` with its
    `logs_version` and `write_id`; a retry's, which stored nothing, is ignored) to the run at
    `run_location`. Only noted here (a few dictionary look-ups: this runs in every log()); the
    next read of the run folds the notes into its kept snapshot (`fold`), so the first read
    after the writer's own logs reads nothing."""
    version, write_id = getattr(record, "logs_version", None), getattr(record, "write_id", None)
    if not record.created or version is None or write_id is None:
        return
    loc = run_location.child("logs.lance")
    found = writes.committed_seq_hi(loc, version)  # (commit time, its highest fragment: ours)
    if found is None and version == 1:  # the commit that made the table: its one fragment, the first
        found = (None, 0)
    _note(loc, version, [(record, None if found is None else fragments.row_address(found[1], 0))],
          None if found is None else found[0])


def note_group_commit(loc: Location, version: int, rows: list[tuple[Any, int]]) -> None:
    """`note_log` for a group commit (`artstore.log.group_commit.on_commit`, in the committer
    thread): this process committed the logs `rows` ([(record, its row's address)], log order;
    the record None for a row that lost to an earlier copy of its log_id: its row is accounted
    for in its fragment, never added) to the journal at `loc` in one commit, `version`. Folded
    at once (the committer's time, not a read's)."""
    found = writes.committed_seq_hi(loc, version)
    _note(loc, version, rows, None if found is None else found[0])
    # Folded here, in the committer thread, with the answers kept reads derived (the history):
    # the next read of the run finds them made, and need not wait for this commit at all.
    fold(loc)
    with LOCK:
        snapshot = log_snapshot.kept(loc.uri)
    if snapshot is not None and snapshot.version == version:
        snapshot.derive_ahead()


def _note(loc: Location, version: int, rows: list[tuple[Any, int | None]], when: Any) -> None:
    """Keep the notes of `rows` ([(record, row address: None when not known)]) of `version`."""
    with LOCK:
        notes = _NOTES.get(loc.uri)
        if notes is None and log_snapshot.kept(loc.uri) is None and version != 1:
            return  # nothing kept to extend, and not the run's first log: the next read reads
        if any(address is None for _, address in rows):  # not this process's commit as it knows it:
            _NOTES.pop(loc.uri, None)  # the next read reads what is new
            return
        if notes is None:
            notes = _NOTES[loc.uri] = []
        for older in notes[-1:]:  # only the newest note's dataset is needed
            older.ds = older.stamp = None
        for record, address in rows[:-1]:
            notes.append(_Note(record, version, address, when, None, None))
        notes.append(_Note(rows[-1][0], version, rows[-1][1], when, handles.held(loc, version),
                           handles.stamp(loc, version)))
        full = len(notes) > _MAX_NOTES
    if full:
        fold(loc)


def fold(loc: Location) -> None:
    """Extend the kept snapshot of the logs table at `loc` by this process's noted logs, reading
    nothing (see the module doc). The run's first log (version 1, which made the table) starts it."""
    with LOCK:
        notes = _NOTES.pop(loc.uri, None)
        old = log_snapshot.kept(loc.uri)
    if not notes:
        return
    # commit order: a group commit's notes share a version and a fragment, its rows in address order
    notes = sorted((n for n in notes if old is None or n.version > old.version), key=lambda n: (n.version, n.address))
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
    if len({n.address for n in notes}) < len(notes):
        return
    for fragment, count in Counter(n.fragment for n in notes).items():
        # each a fragment above the snapshot's holding exactly the noted rows; still there, or moved since
        here = identities.get(fragment)
        if fragment <= top or (here is not None and (here[1] != "None" or here[2] != count)):
            return
        ours[fragment] = here if here is not None else ((), "None", count)
    if any(fragments.address_parts(n.address)[1] >= ours[n.fragment][2] for n in notes):
        return
    moved = log_snapshot.moved({} if old is None else old.identities, identities, ours)
    if moved is None:
        return
    row_schema = pa.schema([*(schema.field(c) for c in log_snapshot.columns(schema)), pa.field("_rowaddr", pa.uint64())],
                           schema.metadata) if old is None else old.by_seq.schema
    notes = [n for n in notes if n.record is not None]  # (a loser's fragment is in `ours`: not moved, not new)
    rows = pa.Table.from_pylist([row(n.record, n.address) for n in notes], schema=row_schema)  # commit order
    key = (last.version, str(datasets.version_time(ds) if last.when is None else last.when))
    if old is None:
        snapshot = Snapshot(loc, ds, schema, identities, log_snapshot.unplaced(rows, moved[0]), key=key,
                            unresolved=moved[1])
    elif not notes:  # only losers: the same logs as `old`
        before, earlier = log_snapshot.base(old)
        snapshot = Snapshot(loc, ds, schema, identities, log_snapshot.unplaced(old.by_seq, moved[0]), old.committed,
                            old.committed.schema.empty_table() if before is None else before, earlier, key=key,
                            unresolved=(old.unresolved - moved[0]) | moved[1])
    else:
        by_seq = log_snapshot.unplaced(log_snapshot.concat([old.by_seq, rows]), moved[0])
        # in the order of `Run.logs()` (`log_snapshot.before`'s keys): most often commit order
        # already (a sort_by takes every column, ~0.5 ms)
        order = sorted(range(len(notes)), key=lambda i: (notes[i].record.recorded_at, notes[i].record.log_id.encode()))
        fresh = rows.drop_columns(["_rowaddr"])
        found = log_snapshot.appended(old, fresh if order == list(range(len(notes))) else fresh.take(order),
                                      lambda committed, appended, earlier: Snapshot(
                                          loc, ds, schema, identities, by_seq, committed, appended, earlier, key=key,
                                          unresolved=(old.unresolved - moved[0]) | moved[1]))
        if found is None:
            return
        snapshot = found
    snapshot.stamp = last.stamp if last.ds is not None else handles.stamp(loc, last.version)
    log_snapshot.keep(snapshot, lambda current: current is old)


def row(record: Any, address: int) -> dict[str, Any]:
    """The kept row (`Snapshot.by_seq`) of a log this process committed (`record`, a
    `LogRecord`) at the row `address` (fragment id << 32 | offset): its journal row's log
    columns; its sequence is its fragment's id."""
    values = dict(record.metrics)
    return {
        "log_id": record.log_id, "write_id": record.write_id, "split": record.split, "step": record.step,
        "num_groups": record.num_groups, "num_trajectories": record.num_trajectories,
        "num_exceptions": record.num_exceptions, "num_metrics": len(values), "table_versions": None,
        "recorded_at": record.recorded_at, SEQ: fragments.address_parts(address)[0], "metric_names": list(values),
        "metric_values": list(values.values()), "_rowaddr": address,
    }


group_commit.on_commit(note_group_commit)
