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
import pyarrow as pa
from lance import LanceDataset, LanceOperation
from lance.fragment import write_fragments

from artstore.errors import CommitConflictError, StorageError, VersionNotFoundError
from artstore.storage.failures import storage_error
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
    except StorageError:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        text = loc.redact(str(e))
        if "conflict" in text.lower() and "retr" in text.lower():
            raise CommitConflictError(f"{action} {loc.uri}: too many concurrent commits; retry. ({text})") from None
        raise storage_error(loc, action, e) from None


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
        raise storage_error(loc, "open", e) from None
    except OSError as e:
        raise storage_error(loc, "open", e) from None


def _create(loc: Location, table: pa.Table, fragments: list, message: str = "") -> LanceDataset | None:
    """Make `fragments` (written from `table`) the first version of the dataset at `loc`; None when
    another writer created it first. A create that failed for its own reason raises.

    Committed with no retries: a create is an Overwrite, and Lance retries a conflicting Overwrite
    as a later version that replaces the winner's rows (lance.write_dataset(mode="create") lost
    one writer's rows that way when four processes created one dataset on S3 at once)."""
    try:
        return LanceDataset.commit(loc.uri, LanceOperation.Overwrite(table.schema, fragments),
                                   storage_options=loc.lance_options(), max_retries=0,
                                   commit_message=message or None)
    except (OSError, ValueError):
        if open_dataset(loc) is None:
            raise
        return None


def _write(loc: Location, table: pa.Table) -> list:
    return write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())


def append(loc: Location, table: pa.Table, message: str = "") -> int:
    """Append `table` as one commit; create the dataset on first use. Returns the new version."""
    with storage_errors(loc, "append to"):
        fragments = _write(loc, table)
        ds = open_dataset(loc)
        if ds is None:
            created = _create(loc, table, fragments, message)
            if created is not None:
                return created.version
            ds = open_dataset(loc)  # lost the create: append the same fragments
        return LanceDataset.commit(
            loc.uri, LanceOperation.Append(fragments), read_version=ds.version,
            storage_options=loc.lance_options(), max_retries=COMMIT_RETRIES, commit_message=message or None,
        ).version


def insert_unique(loc: Location, table: pa.Table, key: str) -> tuple[bool, int]:
    """Insert rows whose `key` is not present yet (the key field is Lance's unenforced primary key,
    which makes this safe against concurrent writers). Returns (inserted any, version)."""
    with storage_errors(loc, "insert into"):
        ds = open_dataset(loc)
        if ds is None:
            created = _create(loc, table, _write(loc, table))
            if created is not None:
                return True, created.version
            ds = open_dataset(loc)  # lost the create: its unreferenced data files stay (a few KB)
        result = ds.merge_insert(key).when_not_matched_insert_all().conflict_retries(COMMIT_RETRIES).execute(table)
        return result["num_inserted_rows"] > 0, open_dataset(loc).version


def upsert(loc: Location, table: pa.Table, key: str) -> int:
    """Insert rows, replacing rows with the same `key` (one commit). Returns the version."""
    with storage_errors(loc, "upsert into"):
        ds = open_dataset(loc)
        if ds is None:
            created = _create(loc, table, _write(loc, table))
            if created is not None:
                return created.version
            ds = open_dataset(loc)
        (ds.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
         .conflict_retries(COMMIT_RETRIES).execute(table))
        return open_dataset(loc).version


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
