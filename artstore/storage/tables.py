"""Lance datasets: open, append, scan, versions, tags (first-per-key reads and the key caches:
`keys`; compaction and cleanup: `compaction`).

Every Lance call of artstore goes through here, and every Lance error leaves as a
`StorageError` (secrets redacted). Appends write their data files first and commit once, with
many retries, so many concurrent writers don't fail on commit conflicts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from lance import LanceDataset, LanceOperation
from lance.fragment import FragmentMetadata, write_fragments

from artstore.errors import ArtstoreError, CommitConflictError, StorageError, VersionNotFoundError
from artstore.storage import barrier, files, handles
from artstore.storage.failures import storage_error
from artstore.storage.location import Location

COMMIT_RETRIES = 1000
SEQ = "commit_seq"  # see `keys.first_per_key`
# A cleanup beside a writer (a short retention window) can remove the version the writer read;
# it then re-reads the latest and tries again, this many times.
VANISHED_RETRIES = 3


@contextlib.contextmanager
def storage_errors(loc: Location, action: str) -> Iterator[None]:
    """Turn Lance/IO errors into StorageError naming the dataset, never a secret."""
    try:
        yield
    except ArtstoreError:  # already says what went wrong (e.g. a ValidationError is a ValueError)
        raise
    except (OSError, RuntimeError, ValueError) as e:
        text = loc.redact(str(e))
        if "conflict" in text.lower() and "retr" in text.lower():
            raise CommitConflictError(f"{action} {loc.uri}: too many concurrent commits; retry. ({text})") from None
        raise storage_error(loc, action, e) from None


def vanished(e: BaseException) -> bool:
    """Whether `e` says a file of the dataset was not found (a cleanup removed what was read)."""
    text = str(e).lower()
    return "not found" in text or "no such file" in text


def exists(loc: Location) -> bool:
    return open_dataset(loc) is not None


def open_dataset(loc: Location, version: int | str | None = None, asof: datetime | None = None,
                 session: lance.Session | None = None) -> LanceDataset | None:
    """The dataset at `loc` (latest, or at a version/tag, or the newest version committed at or
    before the timezone-aware `asof`), or None when it does not exist."""
    if version is None and asof is None:
        barrier.wait(loc)  # this process's commits in flight land first (`barrier`)
    if asof is not None and version is None:
        version = _version_at(loc, asof)
        if version is None:
            return None
    if version is None and asof is None and loc.is_local:  # on a bucket a LIST costs what the probes do
        latest = _latest_by_hint(loc, session)
        if latest is not None:
            return latest
    try:
        return lance.dataset(loc.uri, version=version, storage_options=loc.lance_options(), session=session)
    except ValueError as e:  # Lance raises ValueError for a missing dataset
        text = str(e)
        if version is not None or asof is not None:
            if "not found" in text.lower() or "does not exist" in text.lower() or "version" in text.lower():
                if open_dataset(loc) is None:
                    return None
                raise VersionNotFoundError(
                    f"{loc.uri} has no version {version if version is not None else asof}; "
                    "list them with Run.versions() (old versions go after the retention window)"
                ) from None
        if "not found" in text.lower() or "does not exist" in text.lower():
            return None
        raise storage_error(loc, "open", e) from None
    except OSError as e:
        raise storage_error(loc, "open", e) from None


_MAX_U64 = 2**64 - 1


def _manifest(loc: Location, version: int) -> Location:
    # Lance's V2 manifest naming: u64::MAX - version, so that names sort newest first
    return loc.child("_versions", f"{_MAX_U64 - version}.manifest")


def open_latest(loc: Location) -> LanceDataset | None:
    """`open_dataset(loc)` for a writer: through this process's handle on the dataset, so that
    an open costs a probe (`handles`), not a listing of `_versions/` or a manifest read."""
    barrier.wait(loc)
    return handles.latest(loc, lambda: open_dataset(loc))


def _latest_by_hint(loc: Location, session: lance.Session | None = None) -> LanceDataset | None:
    """The latest version of the local dataset at `loc`, found without listing `_versions/` (which
    grows with every commit kept: 1.1 ms at 3,000 manifests): the
    version in Lance's `latest_version_hint.json`, then each next manifest that exists (the hint
    is written after a commit, so it may lag), opened at that explicit version. None when there
    is no hint or its manifest is gone (the caller lists instead)."""
    try:
        version = int(json.loads(files.get_bytes(loc.child("_versions", "latest_version_hint.json")))["version"])
        while files.exists(_manifest(loc, version + 1)):
            version += 1
        return lance.dataset(loc.uri, version=version, storage_options=loc.lance_options(), session=session)
    except (StorageError, OSError, ValueError, KeyError, TypeError):
        return None


def latest_stamp(loc: Location) -> tuple[int, int] | None:
    """(latest version, its manifest's modification time in ns) of the local dataset at `loc`,
    found as `_latest_by_hint` does but without opening it (~0.1 ms instead of ~1.5 ms): what a
    reader keeping a version open compares to know it is still the latest (a manifest is written
    once; a dataset created again writes new ones). None on a bucket, or when there is no hint."""
    if not loc.is_local:
        return None
    barrier.wait(loc)
    try:
        with open(os.path.join(loc.uri, "_versions", "latest_version_hint.json"), "rb") as f:
            version = int(json.loads(f.read())["version"])
        while os.path.exists(_manifest(loc, version + 1).uri):
            version += 1
        return version, os.stat(_manifest(loc, version).uri).st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(loc: Location, fragments: list, schema: pa.Schema, message: str) -> int | None:
    """Commit `fragments` as version 1 of a new dataset at `loc`; None when another writer
    created it first. Not `lance.write_dataset(mode="create")`: when two of those race, pylance
    14 retries the loser as an overwrite at the next version, silently dropping the winner's rows
    and any appended in between (measured: 3 of 6 racing creates "succeeded", one's rows kept)."""
    try:
        return LanceDataset.commit(
            loc.uri, LanceOperation.Overwrite(schema, fragments), max_retries=0,
            storage_options=loc.lance_options(), commit_message=message or None,
        ).version
    except (OSError, ValueError, RuntimeError):
        if open_dataset(loc) is None:
            raise
        return None


def append(loc: Location, table: pa.Table, message: str = "", read_version: int | None = None) -> int:
    """Append `table` as one commit; create the dataset on first use. Returns the new version.
    `read_version`: see `commit_files`."""
    return commit_files(loc, write_files(loc, table), table.schema, message, read_version)


def write_files(loc: Location, table: pa.Table) -> list[FragmentMetadata]:
    """Write the rows of `table` as new data files of the dataset at `loc`, without committing
    them: no version names them, so no reader sees them, until `commit_files`. The first half of
    `append`, for a writer that overlaps it with other work (`writer`); `discard_files` removes
    the files of a write it then decides not to commit."""
    with storage_errors(loc, "write to"):
        # through the held dataset: its object store, and no open of the latest version
        target = handles.held(loc) or loc.uri
        return write_fragments(table, target, schema=table.schema, storage_options=loc.lance_options())


def commit_files(loc: Location, fragments: list[FragmentMetadata], schema: pa.Schema, message: str = "",
                 read_version: int | None = None, before_create: Callable[[], None] | None = None) -> int:
    """Commit `fragments` (from `write_files`, rows of `schema`) as one appending version of the
    dataset at `loc`, creating it on first use. Returns the new version.

    `read_version`: a version of the dataset the caller opened moments ago, to commit on without
    opening it again (opening lists every manifest in the version window: ~0.9 ms at 2,400). An
    append is compatible with whatever was committed since, which Lance checks (one transaction
    file per version since), so any version will do; a vanished one falls back to the latest.
    `before_create` runs (and may raise) before the dataset is created."""
    with storage_errors(loc, "append to"):
        base = read_version
        if not base:
            ds = open_dataset(loc)
            if ds is None:
                if before_create is not None:
                    before_create()  # e.g. refuse to recreate a table the store says was there
                version = _create(loc, fragments, schema, message)
                if version is not None:
                    return version
                ds = open_dataset(loc)  # lost the race to create it: append the same files
            base = ds.version
        for attempt in range(VANISHED_RETRIES + 1):
            try:
                # Through the held dataset even when it is newer than `base` (e.g. this process's
                # compaction landed meanwhile): Lance checks out the latest to commit on, whatever
                # version the handle has; a uri would make it list `_versions/` first.
                held = handles.held(loc)
                committed = LanceDataset.commit(
                    held if held is not None and held.version >= base else loc.uri,
                    LanceOperation.Append(fragments), read_version=base,
                    storage_options=loc.lance_options(), max_retries=COMMIT_RETRIES, commit_message=message or None,
                )
                handles.remember(loc, committed)
                note_commit(loc, committed)
                return committed.version
            except OSError as e:
                if attempt == VANISHED_RETRIES or not vanished(e):
                    raise
                base = open_dataset(loc).version  # a cleanup removed the version we read: commit on the latest
        raise AssertionError("unreachable")


def create(loc: Location, table: pa.Table, message: str = "") -> int | None:
    """Create the dataset at `loc` holding `table` (version 1); None when it exists already (the
    written files are left for cleanup: no version names them)."""
    with storage_errors(loc, "create"):
        return _create(loc, write_files(loc, table), table.schema, message)


def update_config(loc: Location, updates: dict[str, str], read_version: int) -> int | None:
    """Set keys of the dataset's config (its manifest) in one commit on `read_version`, without
    retrying: None when any other config change was committed since `read_version` (Lance finds
    two UpdateConfig transactions incompatible), which makes this a compare-and-set. Returns the
    new version."""
    with storage_errors(loc, "update the config of"):
        held = handles.held(loc)  # its object store, and no listing of `_versions/` (see `commit_files`)
        try:
            committed = LanceDataset.commit(
                held if held is not None and held.version >= read_version else loc.uri,
                LanceOperation.UpdateConfig(config_updates=LanceOperation.UpdateMap(updates, replace=False)),
                read_version=read_version, max_retries=0, storage_options=loc.lance_options(),
            )
            handles.remember(loc, committed)
            return committed.version
        except OSError as e:
            if "incompatible" in str(e).lower() or "conflict" in str(e).lower():
                return None
            raise


def first_file(fragment: Any) -> str:
    """The path of the first data file of `fragment` (a LanceFragment or FragmentMetadata), ""
    when it has none. Reads DataFile's stored path: its `path` property builds a str subclass on
    each call (~12 us; a look-up by key reads one per fragment)."""
    found = fragment.data_files()
    return data_file_path(found[0]) if found else ""


def data_file_path(data_file: Any) -> str:
    """The path of a Lance `DataFile`. pylance 14's `path` property defines a class on each access
    (~20 us idle, ~250 us under load): its field, where present."""
    found = getattr(data_file, "_path", None)
    return found if isinstance(found, str) else str(data_file.path)


def fragment_ids(ds: LanceDataset) -> list[int]:
    """The fragment ids of the version `ds`, ascending, from its manifest in memory (no
    LanceFragment objects: ~0.2 us in all instead of ~2 us a fragment)."""
    raw = getattr(ds, "_ds", None)
    if raw is not None and hasattr(raw, "fragment_ids"):
        return sorted(raw.fragment_ids())
    return sorted(f.fragment_id for f in ds.get_fragments())


def fragments_of(ds: LanceDataset) -> int:
    """How many fragments the version `ds` has, from its manifest in memory (no LanceFragment
    objects: ~0.1 us instead of ~7 us a fragment)."""
    raw = getattr(ds, "_ds", None)
    return raw.count_fragments() if raw is not None and hasattr(raw, "count_fragments") else len(ds.get_fragments())


def discard_files(loc: Location, fragments: list[FragmentMetadata]) -> None:
    """Delete the data files of `fragments`, written by `write_files` and never committed (so
    nothing references them)."""
    for fragment in fragments:
        for data in fragment.data_files():
            files.delete(loc.child("data", data_file_path(data)), recursive=False)


def _merge_insert(loc: Location, table: pa.Table, key: str | list[str], update: bool,
                  condition: str | None = None) -> tuple[bool, int]:
    """merge_insert on `key` (insert new keys; with `update`, replace existing ones, where the Lance
    SQL `condition` over `source.` and `target.` columns holds); creates the dataset on first use.
    Returns (any row inserted or updated, version)."""
    ds = open_dataset(loc)
    if ds is None:
        fragments = write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())
        version = _create(loc, fragments, table.schema, "")
        if version is not None:
            return True, version
        ds = open_dataset(loc)  # another writer created it first: merge into theirs
    builder = ds.merge_insert(key)
    if update:
        builder = builder.when_matched_update_all(condition)
    result = builder.when_not_matched_insert_all().conflict_retries(COMMIT_RETRIES).execute(table)
    changed = result["num_inserted_rows"] + result["num_updated_rows"] > 0
    return changed, ds.version  # execute() moves `ds` to its commit


def insert_unique(loc: Location, table: pa.Table, key: str) -> tuple[bool, int]:
    """Insert rows whose `key` is not present yet (the key field is Lance's unenforced primary key,
    which makes this safe against concurrent writers). Returns (inserted any, version)."""
    with storage_errors(loc, "insert into"):
        return _merge_insert(loc, table, key, update=False)


def upsert(loc: Location, table: pa.Table, key: str) -> int:
    """Insert rows, replacing rows with the same `key` (one commit). Returns the version."""
    with storage_errors(loc, "upsert into"):
        return _merge_insert(loc, table, key, update=True)[1]


def upsert_where(loc: Location, table: pa.Table, keys: list[str], condition: str) -> bool:
    """Insert rows whose `keys` are new, and replace the rows with the same keys where the Lance
    SQL `condition` (over `source.` and `target.` columns) holds (one commit; concurrent writers
    retry). Columns the dataset lacks (an older schema) are added first, null. Returns whether a
    row changed."""
    with storage_errors(loc, "upsert into"):
        ds = open_dataset(loc)
        if ds is not None and (missing := [f for f in table.schema if f.name not in ds.schema.names]):
            try:
                ds.add_columns(missing)
            except (OSError, ValueError, RuntimeError):
                if any(f.name not in open_dataset(loc).schema.names for f in missing):
                    raise  # not another writer adding them first
        return _merge_insert(loc, table, keys, update=True, condition=condition)[0]


def data_bytes(loc: Location) -> int:
    """Bytes of the data files the latest version of the dataset at `loc` names, from its manifest
    (no listing); 0 when it does not exist. Old versions' files and deletion files are not counted."""
    ds = open_dataset(loc)
    if ds is None:
        return 0
    with storage_errors(loc, "read the manifest of"):
        total = 0
        for fragment in ds.get_fragments():
            for f in fragment.metadata.files:
                size = f.file_size_bytes
                total += size if size is not None else files.size(loc.child("data", f.path))
        return total


def add_null_columns(loc: Location, fields: list[pa.Field]) -> None:
    """Add the nullable `fields` the dataset at `loc` lacks, as all-null columns: one commit that
    changes only the schema (no data file is written). Lance refuses it when another commit landed
    since the version opened (nothing is lost: it is tried again on the latest); fragments written
    for the old schema still append afterwards, their rows null in the new columns."""
    for _ in range(COMMIT_RETRIES):
        ds = open_dataset(loc)
        missing = [f for f in fields if ds is not None and f.name not in ds.schema.names]
        if not missing:
            return
        try:
            with storage_errors(loc, "add columns to"):
                ds.add_columns(missing)
            return
        except (CommitConflictError, StorageError) as e:
            if "conflict" not in str(e).lower() and "preempted" not in str(e).lower():
                raise
    raise CommitConflictError(f"add columns to {loc.uri}: too many concurrent commits; retry")


def filter_rows(table: pa.Table, filter: str) -> pa.Table:
    """The rows of the in-memory `table` matching the Lance SQL `filter` (through a scratch
    dataset in a temporary folder: Lance filters datasets only)."""
    with tempfile.TemporaryDirectory(prefix="artstore-filter-") as scratch, \
            storage_errors(Location.parse(scratch), "filter"):
        return lance.write_dataset(table, f"{scratch}/rows.lance").to_table(filter=filter)


def scan(
    loc: Location,
    columns: list[str] | None = None,
    filter: str | None = None,
    version: int | str | None = None,
) -> pa.Table | None:
    """Read `columns` of rows matching the Lance SQL `filter`, or None if the dataset is missing."""
    with storage_errors(loc, "read"):
        ds = open_dataset(loc, version=version)
        if ds is None:
            return None
        return ds.to_table(columns=columns, filter=filter)


def arrow_dataset(loc: Location, version: int | str | None = None,
                  asof: datetime | None = None) -> tuple[pads.Dataset, int] | None:
    """The table at `loc` (latest, or at a version/tag/time) as a pyarrow Dataset, with the version
    opened; None when it does not exist. A LanceDataset is a pyarrow Dataset: engines that scan
    Arrow datasets (DuckDB) push their column projections and simple filters into Lance's scan.
    Datasets opened here share one Lance session, whose cache of file metadata makes repeated
    reads of the same files (many queries over the same runs) cheaper."""
    if version is None and asof is None and loc.is_local:
        ds = _latest_kept(loc)
    else:
        ds = open_dataset(loc, version=version, asof=asof, session=_read_session())
    return None if ds is None else (ds, ds.version)


_KEPT: OrderedDict[str, LanceDataset] = OrderedDict()  # uri -> the latest version `arrow_dataset` opened
_KEPT_MAX = 4096
_KEPT_LOCK = threading.Lock()


def _latest_kept(loc: Location) -> LanceDataset | None:
    """The latest version of the local dataset at `loc`, kept open between calls: the version in
    Lance's hint (then each next manifest that exists) is compared with the one kept, and only a
    newer one is opened (a manifest read). A folder that does not exist is no dataset (one stat)."""
    # Plain file calls, not fsspec's: this runs once per table per run of every query (~0.1 ms saved each)
    barrier.wait(loc)
    try:
        with open(os.path.join(loc.uri, "_versions", "latest_version_hint.json"), "rb") as f:
            version = int(json.loads(f.read())["version"])
        while os.path.exists(_manifest(loc, version + 1).uri):
            version += 1
    except (OSError, ValueError, KeyError, TypeError):
        if not os.path.exists(loc.uri):
            return None
        return open_dataset(loc, session=_read_session())  # no hint: list the versions
    with _KEPT_LOCK:
        kept = _KEPT.get(loc.uri)
        if kept is not None and kept.version == version:
            _KEPT.move_to_end(loc.uri)
            return kept
    try:
        ds = open_dataset(loc, version=version, session=_read_session())
    except VersionNotFoundError:  # the hint names a version cleaned up since: list them
        ds = open_dataset(loc, session=_read_session())
    if ds is not None:
        with _KEPT_LOCK:
            _KEPT[loc.uri] = ds
            while len(_KEPT) > _KEPT_MAX:
                _KEPT.popitem(last=False)
    return ds


# (uri, version) -> (commit time, fragment count, largest fragment id), of this process's appends
# and compactions
_COMMITS: OrderedDict[tuple[str, int], tuple[datetime, int, int]] = OrderedDict()
_COMMITS_LOCK = threading.Lock()


def note_commit(loc: Location, committed: LanceDataset) -> None:
    """Remember what the version `committed` (just made by this process) holds, so that later
    questions about it (`committed_at`, `committed_fragments`, `committed_seq_hi`) read nothing."""
    ids = fragment_ids(committed)
    with _COMMITS_LOCK:
        _COMMITS[(loc.uri, committed.version)] = (version_time(committed), len(ids), max(ids, default=-1))
        while len(_COMMITS) > 1024:
            _COMMITS.popitem(last=False)


def committed_seq_hi(loc: Location, version: int) -> tuple[datetime, int] | None:
    """(commit time, largest fragment id) of `version` of the dataset at `loc` when this process
    made it (`note_commit`), without reading storage; else None."""
    with _COMMITS_LOCK:
        found = _COMMITS.get((loc.uri, version))
    return None if found is None else (found[0], found[2])


def committed_at(loc: Location, version: int) -> datetime | None:
    """When this process's append made `version` of the dataset at `loc` (UTC), without reading
    storage; None when this process did not make it (or it is long past)."""
    with _COMMITS_LOCK:
        found = _COMMITS.get((loc.uri, version))
    return None if found is None else found[0]


def committed_fragments(loc: Location, version: int) -> int | None:
    """How many fragments `version` of the dataset at `loc` has, without reading storage; None
    when this process's append did not make it (or it is long past)."""
    with _COMMITS_LOCK:
        found = _COMMITS.get((loc.uri, version))
    return None if found is None else found[1]


def version_time(ds: pads.Dataset) -> datetime:
    """When the version `ds` (from `arrow_dataset`) was committed (UTC); read from its manifest."""
    return _utc(ds.get_version()["timestamp"])


def same_rows_since(ds: LanceDataset, version: int, limit: int = 8) -> bool:
    """Whether `ds` holds exactly the rows it held at its earlier `version`: each of the (at most
    `limit`) versions after it only compacted files (a Rewrite) or kept the fragments as they were
    (e.g. reserving fragment ids). False when unsure; the caller then reads the table."""
    if not 0 < ds.version - version <= limit:
        return False
    try:
        fragments = [f.fragment_id for f in ds.checkout_version(version).get_fragments()]
        for v in range(version + 1, ds.version + 1):
            tx = ds.read_transaction(v)
            now = [f.fragment_id for f in ds.checkout_version(v).get_fragments()]
            if tx is None or (type(tx.operation).__name__ != "Rewrite" and now != fragments):
                return False
            fragments = now
    except (OSError, ValueError, RuntimeError):
        return False  # e.g. a version cleaned up meanwhile
    return True


@functools.cache
def _read_session() -> lance.Session:
    return lance.Session()


def read_session() -> lance.Session:
    """The Lance session shared by readers (`arrow_dataset`): its cache of file metadata makes
    repeated reads of the same files cheaper."""
    return _read_session()


def version_timestamp(loc: Location, version: int) -> datetime:
    """When `version` of the table at `loc` was committed (UTC)."""
    ds = open_dataset(loc, version=version)
    if ds is None:
        raise VersionNotFoundError(f"{loc.uri} does not exist")
    with storage_errors(loc, "read the version of"):
        return version_time(ds)


def _version_at(loc: Location, when: datetime) -> int | None:
    # Lance's own `asof` compares its naive local version times with the given datetime (a
    # TypeError for an aware one) and excludes a version committed exactly at that time.
    return newest_at(loc, versions(loc), when)


def newest_at(loc: Location, listed: list[dict[str, Any]], when: datetime) -> int | None:
    """The newest of the `listed` versions ([{version, timestamp (UTC)}], oldest first) of the
    dataset at `loc` committed at or before `when`; None when none is listed (no dataset),
    VersionNotFoundError when all are later."""
    if not listed:
        return None
    found = [v["version"] for v in listed if v["timestamp"] <= when]
    if not found:
        raise VersionNotFoundError(
            f"{loc.uri} has no version at or before {when.isoformat()} (its first is from "
            f"{listed[0]['timestamp'].isoformat()})")
    return max(found)


def versions(loc: Location) -> list[dict[str, Any]]:
    """[{version, timestamp (UTC), tags}] oldest first; [] when the dataset does not exist."""
    ds = open_dataset(loc)
    if ds is None:
        return []
    with storage_errors(loc, "list versions of"):
        tags: dict[int, list[str]] = {}
        for name, info in ds.tags.list().items():
            tags.setdefault(info["version"], []).append(name)
        return [
            {"version": v["version"], "timestamp": _utc(v["timestamp"]), "tags": sorted(tags.get(v["version"], []))}
            for v in ds.versions()
        ]


def commit_messages(loc: Location, versions: list[int]) -> dict[int, str]:
    """{version: the commit message its writer gave (e.g. "log <log_id>"), or the kind of
    operation (e.g. "Rewrite" for compaction)} for each of `versions` still readable."""
    ds = open_dataset(loc)
    out: dict[int, str] = {}
    if ds is None:
        return out
    for v in versions:
        try:
            t = ds.read_transaction(v)
        except (OSError, ValueError):  # cleaned up, or written before transactions were kept
            continue
        if t is not None:
            props = t.transaction_properties or {}
            out[v] = props.get("__lance_commit_message") or type(t.operation).__name__
    return out


def _utc(ts: datetime) -> datetime:
    # Lance gives naive local times for versions; make them explicit UTC.
    return ts.astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# Held while tagging, and while cleaning up (`compaction.maintain`): a cleanup reads the tags when
# it starts, so a tag made meanwhile on a version it then removes would point at nothing.
CLEANUP_LOCK = threading.Lock()


def create_tag(loc: Location, name: str, version: int | None = None) -> int:
    """Tag `version` (default: latest). Tagged versions survive cleanup. Returns the version.

    Never leaves a tag on a removed version: tagging waits for a cleanup of this process to end,
    and the tagged version is opened afterwards (a cleanup of another process may have removed
    it); VersionNotFoundError, and no tag, when it is gone."""
    with CLEANUP_LOCK:
        ds = open_dataset(loc)
        if ds is None:
            raise VersionNotFoundError(f"{loc.uri} does not exist yet: nothing to tag")
        target = ds.version if version is None else version
        try:
            with storage_errors(loc, "tag"):
                if name in ds.tags.list():
                    ds.tags.update(name, target)
                else:
                    ds.tags.create(name, target)
        except StorageError as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                raise VersionNotFoundError(f"{loc.uri} has no version {target} (cleaned up, or never made); "
                                           "tag a version inside the retention window (Run.versions())") from None
            raise
        try:
            open_dataset(loc, version=name)
        except (VersionNotFoundError, StorageError):
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                ds.tags.delete(name)
            raise VersionNotFoundError(f"{loc.uri} has no version {target} any more (cleaned up); "
                                       "tag a version inside the retention window (Run.versions())") from None
        return target


def tags(loc: Location) -> dict[str, int]:
    ds = open_dataset(loc)
    return {} if ds is None else {k: v["version"] for k, v in ds.tags.list().items()}


def fragment_count(loc: Location) -> int:
    ds = open_dataset(loc)
    return 0 if ds is None else fragments_of(ds)


def validate(loc: Location) -> None:
    """Lance's own consistency check of the latest version; StorageError when it fails."""
    ds = open_dataset(loc)
    if ds is not None:
        with storage_errors(loc, "validate"):
            ds.validate()


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- streaming reads (the trainer's loader) --------------------------------------------------
def latest_version(loc: Location) -> int:
    """The latest version of the dataset at `loc`; 0 when it does not exist."""
    ds = open_dataset(loc)
    return 0 if ds is None else ds.version


def count_rows(loc: Location, filter: str | None = None, version: int | str | None = None) -> int:
    """How many rows match the Lance SQL `filter` (0 when the dataset does not exist)."""
    ds = open_dataset(loc, version=version)
    if ds is None:
        return 0
    with storage_errors(loc, "count rows of"):
        return ds.count_rows(filter=filter)


def match_positions(loc: Location, filter: str | None = None, version: int | str | None = None) -> np.ndarray:
    """Positions (0-based, in storage order: the order `scan_batches` reads) of the rows matching
    the Lance SQL `filter`, as int64; empty when the dataset does not exist. Reads only the
    columns the filter names."""
    ds = open_dataset(loc, version=version)
    if ds is None:
        return np.zeros(0, np.int64)
    with storage_errors(loc, "read"):
        if filter is None:
            return np.arange(ds.count_rows(), dtype=np.int64)
        flags = ds.to_table(columns={"match": filter})["match"]
        return np.flatnonzero(pc.fill_null(flags, False).to_numpy(zero_copy_only=False)).astype(np.int64)


def scan_batches(
    loc: Location,
    *,
    batch_size: int,
    columns: list[str] | None = None,
    filter: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    version: int | str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream rows `offset` to `offset + limit` of those matching `filter` (all rows when None), in
    storage order (stable for one version), as record batches of exactly `batch_size` rows (the
    last may be short). Without a filter Lance reads the row range directly, which is much faster
    than filtering (no late materialisation).
    Nothing is yielded when the dataset does not exist."""
    ds = open_dataset(loc, version=version)
    if ds is None:
        return
    with storage_errors(loc, "read"):
        scanner = ds.scanner(columns=columns, filter=filter, offset=offset, limit=limit,
                             batch_size=batch_size, strict_batch_size=True)
        yield from scanner.to_batches()
