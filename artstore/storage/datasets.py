"""Opening a Lance dataset at one of its versions: the latest (through Lance's version hint, or
this process's handle for a writer), a version or tag, or the version in force at a time (the
as-of rule: the newest version committed at or before it), with the version list that rule
reads; and the datasets readers keep open between queries, sharing one Lance session.

A missing dataset opens as None, never as an error; a version that is gone (cleaned up, never
made) is a `VersionNotFoundError`; any other Lance error leaves as a `StorageError` (secrets
redacted). Version times are UTC.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import lance
import pyarrow.dataset as pads
from lance import LanceDataset

from artstore.errors import StorageError, VersionNotFoundError
from artstore.storage import barrier, files, handles
from artstore.storage.failures import storage_error, storage_errors
from artstore.storage.location import Location


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


def open_latest(loc: Location) -> LanceDataset | None:
    """`open_dataset(loc)` for a writer: through this process's handle on the dataset, so that
    an open costs a probe (`handles`), not a listing of `_versions/` or a manifest read."""
    barrier.wait(loc)
    return handles.latest(loc, lambda: open_dataset(loc))


def open_held(loc: Location) -> LanceDataset | None:
    """The dataset at `loc` as this process holds it (`handles`: the version its own commits and
    opens last left) with no request, on a bucket; else, or with no handle, `open_latest` (a
    probe). For upkeep that commits on what it read, as a writer's own commits do: Lance's commit
    checks what other processes committed since (a conflict fails it, and the next round opens
    afresh: `handles.forget`). Locally a probe is two stats, and it tells a dataset made again."""
    if not loc.is_local:
        barrier.wait(loc)
        mine = handles.held(loc)
        if mine is not None:
            return mine
    return open_latest(loc)


def _latest_by_hint(loc: Location, session: lance.Session | None = None) -> LanceDataset | None:
    """The latest version of the local dataset at `loc`, found without listing `_versions/` (which
    grows with every commit kept: 1.1 ms at 3,000 manifests): the
    version in Lance's `latest_version_hint.json`, then each next manifest that exists (the hint
    is written after a commit, so it may lag), opened at that explicit version. None when there
    is no hint or its manifest is gone (the caller lists instead)."""
    try:
        version = int(json.loads(files.get_bytes(loc.child("_versions", "latest_version_hint.json")))["version"])
        while files.exists(handles.manifest(loc, version + 1)):
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
        version = _local_latest(loc)
        return version, os.stat(handles.local_manifest(loc, version)).st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError):
        return None


def versions_stamp(loc: Location) -> tuple[int, int, int] | None:
    """(inode, modification time in ns, the time it was taken in ns) of the local dataset's
    `_versions/` folder: one stat. Each new version adds its manifest there, so the folder's
    mtime moves; a reader that confirmed the latest version after taking a stamp whose mtime was
    already older than a clock tick (`VERSIONS_TICK_NS`) knows that version is still the latest
    while a new stamp shows the same folder and mtime (cheaper than `latest_stamp`: it reads the
    hint and stats two files). None on a bucket, or when the folder is missing."""
    if not loc.is_local:
        return None
    now = time.time_ns()
    try:
        found = os.stat(os.path.join(loc.uri, "_versions"))
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, now


# A folder changed this recently may change again within its mtime's clock tick: 1 s on ext3, HFS+
# and some network mounts, so a run must have been quiet a little longer for one stat to do.
VERSIONS_TICK_NS = 1_100_000_000


def _local_latest(loc: Location) -> int:
    """The latest version of the local dataset at `loc`: the version in Lance's
    `latest_version_hint.json`, then each next manifest that exists (the hint is written after a
    commit, so it may lag). OSError, ValueError, KeyError or TypeError when there is no readable
    hint."""
    with open(os.path.join(loc.uri, "_versions", "latest_version_hint.json"), "rb") as f:
        version = int(json.loads(f.read())["version"])
    while os.path.exists(handles.local_manifest(loc, version + 1)):
        version += 1
    return version


def latest_version(loc: Location) -> int:
    """The latest version of the dataset at `loc`; 0 when it does not exist."""
    ds = open_dataset(loc)
    return 0 if ds is None else ds.version


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
        version = _local_latest(loc)
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


@functools.cache
def _read_session() -> lance.Session:
    return lance.Session()


def read_session() -> lance.Session:
    """The Lance session shared by readers (`arrow_dataset`): its cache of file metadata makes
    repeated reads of the same files cheaper."""
    return _read_session()


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


def version_time(ds: pads.Dataset) -> datetime:
    """When the version `ds` (from `arrow_dataset`) was committed (UTC); read from its manifest."""
    return _utc(ds.get_version()["timestamp"])


def version_timestamp(loc: Location, version: int) -> datetime:
    """When `version` of the table at `loc` was committed (UTC)."""
    ds = open_dataset(loc, version=version)
    if ds is None:
        raise VersionNotFoundError(f"{loc.uri} does not exist")
    with storage_errors(loc, "read the version of"):
        return version_time(ds)


def _utc(ts: datetime) -> datetime:
    # Lance gives naive local times for versions; make them explicit UTC.
    return ts.astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def validate(loc: Location) -> None:
    """Lance's own consistency check of the latest version; StorageError when it fails."""
    ds = open_dataset(loc)
    if ds is not None:
        with storage_errors(loc, "validate"):
            ds.validate()
