"""Lance datasets: open, append, unique insert, scan, versions, tags, compaction and cleanup.

Every Lance call of artstore goes through here, and every Lance error leaves as a
`StorageError` (secrets redacted). Appends write their data files first and commit once, with
many retries, so many concurrent writers don't fail on commit conflicts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from lance import LanceDataset, LanceOperation
from lance.fragment import write_fragments

from artstore.errors import CommitConflictError, StorageError, VersionNotFoundError
from artstore.storage.failures import storage_error
from artstore.storage.location import Location

os.environ.setdefault("LANCE_LOG", "error")  # Lance warns on every dataset creation otherwise

COMMIT_RETRIES = 1000
# Compaction: the largest fragment it makes, in rows, per table (tens of MB of its rows); full
# fragments are never rewritten again. Smaller fragments are merged in tiers, the smallest
# TIER_FACTOR times the smallest fragment (one append), each next TIER_FACTOR times larger, so a row
# is rewritten about once per tier and the cost of one compaction does not grow with the run.
TARGET_ROWS = {"trajectories": 16_384, "tokens": 16_384, "groups": 65_536, "logs": 65_536}
DEFAULT_TARGET_ROWS = 262_144  # metrics, checkpoints
TIER_FACTOR = 16
# Compact once this many fragments are below the target size (not counting full ones), down to
# COMPACT_TO_FRAGMENTS. Chosen with benchmarks/compaction_policy.py (a simulation of this policy
# over Lance's planner, `after_compaction`, that reproduced a real 2,000-log run exactly).
COMPACT_AFTER_FRAGMENTS = 8
COMPACT_TO_FRAGMENTS = 5
# Cleanup reads every manifest in the retention window, so its cost grows with the window: it
# runs after a compaction (which leaves old files behind), and one process runs it on a table at
# most once per this fraction of the window.
CLEANUP_EVERY_FRACTION_OF_RETENTION = 1 / 8
_last_cleanup: dict[str, float] = {}  # dataset uri -> time.monotonic() of this process's last cleanup


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


def open_dataset(loc: Location, version: int | str | None = None, asof: datetime | None = None,
                 session: lance.Session | None = None) -> LanceDataset | None:
    """The dataset at `loc` (latest, or at a version/tag, or the newest version committed at or
    before the timezone-aware `asof`), or None when it does not exist."""
    if asof is not None and version is None:
        version = _version_at(loc, asof)
        if version is None:
            return None
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


def append(loc: Location, table: pa.Table, message: str = "") -> int:
    """Append `table` as one commit; create the dataset on first use. Returns the new version."""
    with storage_errors(loc, "append to"):
        ds = open_dataset(loc)
        fragments = write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())
        if ds is None:
            version = _create(loc, fragments, table.schema, message)
            if version is not None:
                return version
            ds = open_dataset(loc)  # lost the race to create it: append the same files
        return LanceDataset.commit(
            loc.uri, LanceOperation.Append(fragments), read_version=ds.version,
            storage_options=loc.lance_options(), max_retries=COMMIT_RETRIES, commit_message=message or None,
        ).version


def _merge_insert(loc: Location, table: pa.Table, key: str, update: bool) -> tuple[bool, int]:
    """merge_insert on `key` (insert new keys; with `update`, replace existing ones); creates the
    dataset on first use. Returns (any row inserted or updated, version)."""
    ds = open_dataset(loc)
    if ds is None:
        fragments = write_fragments(table, loc.uri, schema=table.schema, storage_options=loc.lance_options())
        version = _create(loc, fragments, table.schema, "")
        if version is not None:
            return True, version
        ds = open_dataset(loc)  # another writer created it first: merge into theirs
    builder = ds.merge_insert(key)
    if update:
        builder = builder.when_matched_update_all()
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
    ds = open_dataset(loc, version=version, asof=asof, session=_read_session())
    return None if ds is None else (ds, ds.version)


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
    listed = versions(loc)
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


def validate(loc: Location) -> None:
    """Lance's own consistency check of the latest version; StorageError when it fails."""
    ds = open_dataset(loc)
    if ds is not None:
        with storage_errors(loc, "validate"):
            ds.validate()


def tiers(top: int, smallest: int) -> list[int]:
    """Compaction targets in rows, smallest first: TIER_FACTOR x `smallest`, times TIER_FACTOR
    each, ending at `top`."""
    out = [max(1, smallest) * TIER_FACTOR]
    while out[-1] < top:
        out.append(out[-1] * TIER_FACTOR)
    return [t for t in out if t < top] + [top]


def after_compaction(rows: list[int], target: int) -> list[int]:
    """The fragments (their rows) that Lance's compaction to `target` leaves, in order (pylance
    14's planner, checked against Lance by tests/test_small_appends.py): every run of two or more
    adjacent fragments under `target` rows is cut, oldest first, into bins of at least `target`
    rows (the last bin takes what is left); each bin becomes one fragment, placed after all the
    fragments that were not rewritten."""
    kept, written, run = [], [], []
    for r in [*rows, None]:
        if r is not None and r < target:
            run.append(r)
            continue
        if len(run) == 1:
            kept.append(run[0])
        elif run:
            acc, left = 0, sum(run)
            for x in run:
                acc, left = acc + x, left - x
                if acc >= target and left >= target:
                    written.append(acc)
                    acc = 0
            written.append(acc)
        run = []
        if r is not None:
            kept.append(r)
    return kept + written


def compaction_target(rows: list[int], top: int) -> int | None:
    """The smallest tier whose compaction leaves at most COMPACT_TO_FRAGMENTS fragments under
    `top` rows, or None while fewer than COMPACT_AFTER_FRAGMENTS are (nothing to do yet)."""
    full = sum(r >= top for r in rows)
    if len(rows) - full < COMPACT_AFTER_FRAGMENTS:
        return None
    for target in tiers(top, min(rows)):
        if len(after_compaction(rows, target)) - full <= COMPACT_TO_FRAGMENTS:
            return target
    return top


def maintain(loc: Location, table: str, retention: timedelta, force: bool = False) -> dict[str, int]:
    """Compact small fragments (tiered, see `compaction_target`) and remove versions older than
    `retention` (tagged versions are kept).

    Cheap when there is nothing to do: it opens the dataset and counts rows per fragment; cleanup
    follows a compaction, at most once per CLEANUP_EVERY_FRACTION_OF_RETENTION of the window. Safe beside
    concurrent writers (compaction commits like any writer; cleanup keeps the files of versions
    inside the window and unverified new files). `force` compacts everything to the largest
    size and cleans up now.
    """
    ds = open_dataset(loc)
    if ds is None:
        return {"fragments": 0, "compacted": 0, "rewritten_rows": 0, "removed_versions": 0}
    with storage_errors(loc, "compact"):
        rows = {f.fragment_id: f.physical_rows for f in ds.get_fragments()}
        top = TARGET_ROWS.get(table, DEFAULT_TARGET_ROWS)
        target = top if force else compaction_target(list(rows.values()), top)
        after, removed = rows, 0
        if target is not None:
            # One thread: these are small rewrites beside a writer (measured 10-35% less time).
            ds.optimize.compact_files(target_rows_per_fragment=target, num_threads=None if force else 1)
            after = {f.fragment_id: f.physical_rows for f in open_dataset(loc).get_fragments()}
        last = _last_cleanup.get(loc.uri)
        if force or target is not None and (
                last is None or time.monotonic() - last >= retention.total_seconds() * CLEANUP_EVERY_FRACTION_OF_RETENTION):
            removed = ds.cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False).old_versions
            _last_cleanup[loc.uri] = time.monotonic()
        gone = rows.keys() - after.keys()
        return {"fragments": len(after), "compacted": len(gone), "rewritten_rows": sum(rows[i] for i in gone),
                "removed_versions": removed}


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
