"""Lance datasets: open, append, unique insert, scan, versions, tags, compaction and cleanup.

Every Lance call of artstore goes through here, and every Lance error leaves as a
`StorageError` (secrets redacted). Appends write their data files first and commit once, with
many retries, so many concurrent writers don't fail on commit conflicts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceDataset, LanceOperation
from lance.fragment import write_fragments

from artstore.errors import CommitConflictError, StorageError, VersionNotFoundError
from artstore.storage.location import Location

os.environ.setdefault("LANCE_LOG", "error")  # Lance warns on every dataset creation otherwise

COMMIT_RETRIES = 1000
# Compaction merges fragments smaller than this many rows: the fragment count stays bounded by
# rows / TARGET_ROWS plus the few appends since the last compaction.
TARGET_ROWS = {"trajectories": 16_384, "tokens": 16_384}
DEFAULT_TARGET_ROWS = 262_144
COMPACT_AFTER_FRAGMENTS = 24


@contextlib.contextmanager
def storage_errors(loc: Location, action: str) -> Iterator[None]:
    """Turn Lance/IO errors into StorageError naming the dataset, never a secret."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as e:
        text = loc.redact(str(e))
        if "conflict" in text.lower() and "retr" in text.lower():
            raise CommitConflictError(f"{action} {loc.uri}: too many concurrent commits; retry. ({text})") from None
        raise StorageError(f"{action} {loc.uri} failed: {text}") from None


def exists(loc: Location) -> bool:
    return open_dataset(loc) is not None


def open_dataset(loc: Location, version: int | str | None = None, asof: datetime | None = None) -> LanceDataset | None:
    """The dataset at `loc` (latest, or at a version/tag/time), or None when it does not exist."""
    try:
        return lance.dataset(loc.uri, version=version, asof=asof, storage_options=loc.lance_options())
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
        raise StorageError(f"open {loc.uri} failed: {loc.redact(text)}") from None
    except OSError as e:
        raise StorageError(f"open {loc.uri} failed: {loc.redact(str(e))}") from None


def append(loc: Location, table: pa.Table, message: str = "") -> int:
    """Append `table` as one commit; create the dataset on first use. Returns the new version."""
    with storage_errors(loc, "append to"):
        ds = open_dataset(loc)
        if ds is None:
            with contextlib.suppress(OSError, ValueError):  # lost a create race: append instead
                return lance.write_dataset(
                    table, loc.uri, schema=table.schema, mode="create",
                    storage_options=loc.lance_options(), commit_message=message or None,
                ).version
            ds = open_dataset(loc)
        fragments = write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())
        return LanceDataset.commit(
            loc.uri, LanceOperation.Append(fragments), read_version=ds.version,
            storage_options=loc.lance_options(), max_retries=COMMIT_RETRIES, commit_message=message or None,
        ).version


def insert_unique(loc: Location, table: pa.Table, key: str) -> tuple[bool, int]:
    """Insert rows whose `key` is not present yet (the key field is Lance's unenforced primary key,
    which makes this safe against concurrent writers). Returns (inserted any, version)."""
    with storage_errors(loc, "insert into"):
        for _ in range(3):
            ds = open_dataset(loc)
            if ds is None:
                try:
                    created = lance.write_dataset(table, loc.uri, schema=table.schema, mode="create",
                                                  storage_options=loc.lance_options())
                    return True, created.version
                except (OSError, ValueError):
                    continue  # another writer created it first
            result = ds.merge_insert(key).when_not_matched_insert_all().conflict_retries(COMMIT_RETRIES).execute(table)
            return result["num_inserted_rows"] > 0, open_dataset(loc).version
        raise StorageError(f"could not create {loc.uri}")


def upsert(loc: Location, table: pa.Table, key: str) -> int:
    """Insert rows, replacing rows with the same `key` (one commit). Returns the version."""
    with storage_errors(loc, "upsert into"):
        for _ in range(3):
            ds = open_dataset(loc)
            if ds is None:
                try:
                    return lance.write_dataset(table, loc.uri, schema=table.schema, mode="create",
                                               storage_options=loc.lance_options()).version
                except (OSError, ValueError):
                    continue  # another writer created it first
            (ds.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
             .conflict_retries(COMMIT_RETRIES).execute(table))
            return open_dataset(loc).version
        raise StorageError(f"could not create {loc.uri}")


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


def _utc(ts: datetime) -> datetime:
    # Lance gives naive local times for versions; make them explicit UTC.
    return ts.astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def create_tag(loc: Location, name: str, version: int | None = None) -> int:
    """Tag `version` (default: latest). Tagged versions survive cleanup. Returns the version."""
    ds = open_dataset(loc)
    if ds is None:
        raise VersionNotFoundError(f"{loc.uri} does not exist yet: nothing to tag")
    with storage_errors(loc, "tag"):
        target = ds.version if version is None else version
        if name in ds.tags.list():
            ds.tags.update(name, target)
        else:
            ds.tags.create(name, target)
        return target


def tags(loc: Location) -> dict[str, int]:
    ds = open_dataset(loc)
    return {} if ds is None else {k: v["version"] for k, v in ds.tags.list().items()}


def fragment_count(loc: Location) -> int:
    ds = open_dataset(loc)
    return 0 if ds is None else len(ds.get_fragments())


def maintain(loc: Location, table: str, retention: timedelta, force: bool = False) -> dict[str, int]:
    """Compact small fragments and remove versions older than `retention` (tags kept).

    Cheap when there is nothing to do: it only compacts past COMPACT_AFTER_FRAGMENTS fragments.
    Safe beside concurrent writers (compaction commits like any writer; cleanup keeps files of
    versions inside the window and unverified new files).
    """
    ds = open_dataset(loc)
    if ds is None:
        return {"fragments": 0, "compacted": 0, "removed_versions": 0}
    with storage_errors(loc, "compact"):
        n = len(ds.get_fragments())
        compacted = removed = 0
        if force or n >= COMPACT_AFTER_FRAGMENTS:
            m = ds.optimize.compact_files(target_rows_per_fragment=TARGET_ROWS.get(table, DEFAULT_TARGET_ROWS))
            compacted = m.fragments_removed
            stats = ds.cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
            removed = stats.old_versions
            n = len(open_dataset(loc).get_fragments())
        return {"fragments": n, "compacted": compacted, "removed_versions": removed}


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
