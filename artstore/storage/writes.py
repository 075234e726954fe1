"""Writing to Lance datasets: data files written first and committed once (`write_files`,
`commit_files`, `append`), with many retries, so that many concurrent writers don't fail on
commit conflicts; creating a dataset; merge-inserts by key; schema and config changes; and what
this process committed (`note_commit`), so that later questions about its own versions read
nothing.

Every write is one commit (one version), all or nothing; a dataset is created on first use, by
exactly one writer (a racing creator appends to the winner's). Times stamped on rows are UTC
(`now_utc`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
from lance import LanceDataset, LanceOperation
from lance.fragment import FragmentMetadata, write_fragments

from artstore.errors import CommitConflictError, StorageError
from artstore.storage import data_files, datasets, files, handles
from artstore.storage.failures import VANISHED_RETRIES, storage_errors, vanished
from artstore.storage.fragments import fragment_ids
from artstore.storage.location import Location

COMMIT_RETRIES = 1000


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
        if datasets.open_dataset(loc) is None:
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
        held = handles.held(loc)
        target = held if held is not None else loc.uri  # not `or`: bool(dataset) counts its rows
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
            ds = datasets.open_dataset(loc)
            if ds is None:
                if before_create is not None:
                    before_create()  # e.g. refuse to recreate a table the store says was there
                version = _create(loc, fragments, schema, message)
                if version is not None:
                    return version
                ds = datasets.open_dataset(loc)  # lost the race to create it: append the same files
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
                base = datasets.open_dataset(loc).version  # a cleanup removed the version we read: commit on the latest
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


def discard_files(loc: Location, fragments: list[FragmentMetadata]) -> None:
    """Delete the data files of `fragments`, written by `write_files` and never committed (so
    nothing references them)."""
    for fragment in fragments:
        for data in fragment.data_files():
            files.delete(loc.child("data", data_files.data_file_path(data)), recursive=False)


def _merge_insert(loc: Location, table: pa.Table, key: str | list[str], update: bool,
                  condition: str | None = None) -> tuple[bool, int]:
    """merge_insert on `key` (insert new keys; with `update`, replace existing ones, where the Lance
    SQL `condition` over `source.` and `target.` columns holds); creates the dataset on first use.
    Returns (any row inserted or updated, version)."""
    ds = datasets.open_dataset(loc)
    if ds is None:
        fragments = write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())
        version = _create(loc, fragments, table.schema, "")
        if version is not None:
            return True, version
        ds = datasets.open_dataset(loc)  # another writer created it first: merge into theirs
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
        ds = datasets.open_dataset(loc)
        if ds is not None and (missing := [f for f in table.schema if f.name not in ds.schema.names]):
            try:
                ds.add_columns(missing)
            except (OSError, ValueError, RuntimeError):
                if any(f.name not in datasets.open_dataset(loc).schema.names for f in missing):
                    raise  # not another writer adding them first
        return _merge_insert(loc, table, keys, update=True, condition=condition)[0]


def delete_where(loc: Location, condition: str) -> None:
    """Delete the rows where the Lance SQL `condition` holds (one commit; concurrent writers retry)."""
    with storage_errors(loc, "delete from"):
        ds = datasets.open_dataset(loc)
        if ds is not None:
            ds.delete(condition)


def add_null_columns(loc: Location, fields: list[pa.Field]) -> None:
    """Add the nullable `fields` the dataset at `loc` lacks, as all-null columns: one commit that
    changes only the schema (no data file is written). Lance refuses it when another commit landed
    since the version opened (nothing is lost: it is tried again on the latest); fragments written
    for the old schema still append afterwards, their rows null in the new columns."""
    for _ in range(COMMIT_RETRIES):
        ds = datasets.open_dataset(loc)
        missing = [f for f in fields if ds is not None and f.name not in ds.schema.names]
        if not missing:
            return
        try:
            with storage_errors(loc, "add columns to"):
                ds.add_columns(missing)  # moves `ds` to the version it made
            handles.remember(loc, ds)  # writes go through the held handle: the new schema's
            return
        except (CommitConflictError, StorageError) as e:
            if "conflict" not in str(e).lower() and "preempted" not in str(e).lower():
                raise
    raise CommitConflictError(f"add columns to {loc.uri}: too many concurrent commits; retry")


def now_utc() -> datetime:
    return datetime.now(UTC)


# (uri, version) -> (commit time, fragment count, largest fragment id), of this process's appends
# and compactions
_COMMITS: OrderedDict[tuple[str, int], tuple[datetime, int, int]] = OrderedDict()
_COMMITS_LOCK = threading.Lock()


def note_commit(loc: Location, committed: LanceDataset) -> None:
    """Remember what the version `committed` (just made by this process) holds, so that later
    questions about it (`committed_at`, `committed_fragments`, `committed_seq_hi`) read nothing."""
    ids = fragment_ids(committed)
    with _COMMITS_LOCK:
        _COMMITS[(loc.uri, committed.version)] = (datasets.version_time(committed), len(ids), max(ids, default=-1))
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
