"""The version map of a sequenced table: old versions answered after cleanup removed them.

A table with a SEQ column (a run's `logs`) is append-only: no row is ever deleted or changed in a
way readers see, and each row's sequence (`keys.first_per_key`) is its original fragment id,
which Lance assigns in commit order. So the rows visible at version V are exactly the rows of the
latest version whose sequence is at most seq_hi(V), the largest fragment id V's manifest holds
(every later append gets a larger id; a compaction's new fragment holds rows with older
sequences). Before a cleanup removes versions of such a table (`compaction.maintain`), `record`
writes (version, committed_at, seq_hi) of every version the map lacks; `open_version` then
answers a version (or a time) whose manifest is gone from the latest version, filtered by
sequence (`Pinned.upto`).

Storage: Arrow IPC files in `{table}.lance/_artstore_version_map/`, one per cleanup batch, named
by the first and last version they hold. Once more than MERGE_AFTER files exist, `record` merges
them into one (written first, then the others deleted), so the map adds a bounded number of
files. A crash between writing the map and the cleanup leaves entries of versions that still
exist: harmless, a physical version is read physically first and gives the same rows. A crash in
a merge leaves duplicate entries, read once (`entries` keeps one row per version).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceDataset

from artstore.errors import StorageError, VersionNotFoundError
from artstore.storage import files
from artstore.storage.datasets import newest_at, open_dataset, version_time, versions
from artstore.storage.failures import storage_errors, vanished
from artstore.storage.location import Location
from artstore.storage.writes import committed_seq_hi

MAP_DIR = "_artstore_version_map"
MERGE_AFTER = 8  # map files kept before they are merged into one
SCHEMA = pa.schema([
    pa.field("version", pa.int64()),
    pa.field("committed_at", pa.timestamp("us", tz="UTC")),
    pa.field("seq_hi", pa.int64()),  # the largest fragment id of that version (-1: none)
])
_CACHE: dict[str, tuple[tuple[str, ...], pa.Table]] = {}  # map folder uri -> (its file names, entries)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Pinned:
    """One version of a sequenced table as a reader sees it. `dataset` is that version when its
    manifest exists (`upto` None), else the latest version, whose rows with sequence <= `upto`
    are exactly the rows of `version`. `committed_at`: when `version` was committed (UTC)."""

    dataset: LanceDataset
    version: int
    committed_at: datetime
    upto: int | None = None


def _folder(loc: Location) -> Location:
    return loc.child(MAP_DIR)


def entries(loc: Location) -> pa.Table:
    """The map of the table at `loc` (SCHEMA), one row per version, sorted by version; empty
    when there is none. Files already read are not read again."""
    folder = _folder(loc)
    for _ in range(3):  # a merge deleted a file between the listing and its read: list again
        try:
            names = tuple(sorted(n for n in files.list_dir(folder) if n.endswith(".arrow")))
        except StorageError:
            names = ()
        with _LOCK:
            cached = _CACHE.get(folder.uri)
        if cached is not None and cached[0] == names:
            return cached[1]
        parts, vanished = [], False
        for name in names:
            try:
                parts.append(pa.ipc.open_file(pa.py_buffer(files.get_bytes(folder.child(name)))).read_all().cast(SCHEMA))
            except (StorageError, OSError, pa.ArrowInvalid):
                vanished = True
        if not vanished:
            break
    table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    if table.num_rows:
        table = table.take(pc.sort_indices(table["version"]))
        first = pc.index_in(pc.unique(table["version"]), value_set=table["version"])
        table = table.take(first)
    if not vanished:
        with _LOCK:
            _CACHE[folder.uri] = (names, table)
    return table


def _write(loc: Location, rows: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as w:
        w.write_table(rows)
    lo, hi = pc.min(rows["version"]).as_py(), pc.max(rows["version"]).as_py()
    name = f"{lo:020d}-{hi:020d}.arrow"
    files.put_bytes(_folder(loc).child(name), sink.getvalue().to_pybytes())
    return name


def record(loc: Location, ds: LanceDataset) -> int:
    """Add to the map of the table at `loc` (`ds`: opened at its latest version, with a SEQ
    column) every version it still has and the map lacks, latest included; call it right before
    a cleanup of old versions. Returns the entries added. Reads one manifest per version added."""
    known = entries(loc)
    last = pc.max(known["version"]).as_py() if known.num_rows else 0
    rows: list[dict[str, Any]] = []
    # The versions this process made are known without reading their manifests (a writer's appends
    # and its upkeep's compactions: all of them for a run with one writer); the others are read.
    made = {v: committed_seq_hi(loc, v) for v in range(last + 1, ds.version + 1)}
    with storage_errors(loc, "map the versions of"):
        # one manifest read per version not known (`ds.versions()` would read every manifest)
        for v in [v for v, m in made.items() if m is None]:
            try:
                at = ds.checkout_version(v)
            except (OSError, ValueError) as e:  # removed already (another process's cleanup): nothing to map
                if not vanished(e):
                    raise
                continue
            made[v] = (version_time(at), max((f.fragment_id for f in at.get_fragments()), default=-1))
        rows = [{"version": v, "committed_at": m[0], "seq_hi": m[1]} for v, m in sorted(made.items()) if m is not None]
    if rows:
        added = pa.Table.from_pylist(rows, schema=SCHEMA)
        _known(loc, known, _write(loc, added), added)
        _merge(loc)
    return len(rows)


def _known(loc: Location, before: pa.Table, name: str, added: pa.Table) -> None:
    """Note the file `name` this process just wrote (`added` its rows) in the cache when the
    cache held `before`: the next `entries` lists the folder but reads nothing again."""
    folder = _folder(loc)
    with _LOCK:
        cached = _CACHE.get(folder.uri)
        if cached is not None and cached[1] is before:
            rows = pa.concat_tables([before, added]).combine_chunks()
            _CACHE[folder.uri] = (tuple(sorted({*cached[0], name})), rows.take(pc.sort_indices(rows["version"])))


def _merge(loc: Location) -> None:
    """Merge the map's files into one once there are more than MERGE_AFTER (one listing, one
    write, one batch delete)."""
    folder = _folder(loc)
    with _LOCK:
        names = _CACHE.get(folder.uri, ((), None))[0]
    if len(names) <= MERGE_AFTER:  # as of this process's last look (`record` just listed it)
        return
    merged = entries(loc)  # listed again: another process may have merged meanwhile
    with _LOCK:
        names = _CACHE.get(folder.uri, ((), None))[0]
    if len(names) <= MERGE_AFTER:
        return
    kept = _write(loc, merged)
    files.delete_files([folder.child(name) for name in names if name != kept])
    with _LOCK:
        _CACHE[folder.uri] = ((kept,), merged)


def _mapped(loc: Location, version: int) -> dict[str, Any] | None:
    found = entries(loc)
    hit = found.filter(pc.equal(found["version"], version))
    return hit.to_pylist()[0] if hit.num_rows else None


def open_version(loc: Location, version: int | str | None = None, asof: datetime | None = None,
                 session: Any = None) -> Pinned | None:
    """The table at `loc` at its latest version, at `version` (a number or tag) or at the newest
    version committed at or before the timezone-aware `asof`, read physically while its
    manifest exists and through the map after. None when the table does not exist.
    VersionNotFoundError when neither Lance nor the map has that version."""
    if asof is not None and version is None:
        version = version_at(loc, asof)
        if version is None:
            return None
    if not isinstance(version, int):  # latest, or a tag (tagged versions are never cleaned up)
        ds = open_dataset(loc, version=version, session=session)
        return None if ds is None else Pinned(ds, ds.version, version_time(ds))
    try:
        ds = open_dataset(loc, version=version, session=session)
        return None if ds is None else Pinned(ds, ds.version, version_time(ds))
    except VersionNotFoundError:
        hit = _mapped(loc, version)
        if hit is None:
            raise
    latest = open_dataset(loc, session=session)
    if latest is None:
        return None
    return Pinned(latest, version, hit["committed_at"].astimezone(UTC), hit["seq_hi"])


def all_versions(loc: Location) -> list[dict[str, Any]]:
    """[{version, timestamp (UTC), tags}] oldest first: the versions Lance keeps and those only
    the map holds (with no tags); [] when the table does not exist."""
    physical = versions(loc)
    if not physical:
        return []
    have = {v["version"] for v in physical}
    mapped = [{"version": r["version"], "timestamp": r["committed_at"].astimezone(UTC), "tags": []}
              for r in entries(loc).to_pylist() if r["version"] not in have]
    return sorted([*mapped, *physical], key=lambda v: v["version"])


def timestamp(loc: Location, version: int | str) -> datetime:
    """When `version` (a number or tag) of the table at `loc` was committed (UTC), from Lance or the map."""
    pinned = open_version(loc, version)
    if pinned is None:
        raise VersionNotFoundError(f"{loc.uri} does not exist")
    return pinned.committed_at


def version_at(loc: Location, when: datetime) -> int | None:
    """The newest version (Lance's or the map's) committed at or before the timezone-aware
    `when`; None when the table does not exist, VersionNotFoundError when none was."""
    return newest_at(loc, all_versions(loc), when)
