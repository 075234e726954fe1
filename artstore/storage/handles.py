"""Per-process handles on the latest version of the datasets this process writes, so that a
writer's next open costs a probe: not a listing of `_versions/` (which grows with every version
kept), nor a manifest read when nothing changed.

A handle is the LanceDataset this process last committed (or opened at its latest) at a location.
`latest` reuses it when no newer version exists, and otherwise checks the newer version out
through it (same object store and session: no listing). The probe:

- locally, the stats of the handle's manifest (still there with the size and modification time
  it had when the handle was taken: the dataset was not deleted, nor that manifest damaged) and
  of the next version's (absent: nothing newer); Lance writes manifest v+1 only if it is absent, so
  versions are consecutive and this answers what a listing would;
- on S3, one LIST of `_versions/` limited to one key: Lance's V2 manifest names are
  `u64::MAX - version`, zero-padded, so the first key is the latest version's manifest, whatever
  the number of versions kept (Lance's own open lists every key, 1,000 per request);
- elsewhere (gs://, memory://) the caller's own open.

A handle is a snapshot like any LanceDataset: pinned to its version, safe to share across threads.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from lance import LanceDataset

from artstore.errors import ArtstoreError, StorageError
from artstore.storage import files, version_cleanup
from artstore.storage.location import Location

_MAX_U64 = 2**64 - 1
_V2_MANIFEST = re.compile(r"^(\d{20})\.manifest$")
_LOCAL_WALK = 64  # versions to step over by stats before a full open answers instead
_LIMIT = 256  # locations held at once (least recently used goes first)

_HANDLES: OrderedDict[str, LanceDataset] = OrderedDict()
_STAMPS: dict[str, tuple[int, int, int]] = {}  # local uri -> (version, manifest mtime_ns, size)
_LOCK = threading.Lock()
_PID = os.getpid()  # a forked child holds no handle of its parent's (Lance is not fork-safe)


def _handles() -> OrderedDict[str, LanceDataset]:
    global _HANDLES, _PID
    if _PID != os.getpid():
        _HANDLES, _PID = OrderedDict(), os.getpid()
        _STAMPS.clear()
    return _HANDLES


def _stamp(loc: Location, version: int) -> tuple[int, int, int] | None:
    """(version, mtime_ns, size) of the local manifest of `version`; None when it is gone."""
    try:
        st = os.stat(local_manifest(loc, version))
    except OSError:
        return None
    return version, st.st_mtime_ns, st.st_size


def local_manifest(loc: Location, version: int) -> str:
    """`manifest(loc, version)` as a local path (a probe makes two: no Location objects)."""
    return os.path.join(loc.uri, "_versions", f"{_MAX_U64 - version:020d}.manifest")


def manifest(loc: Location, version: int) -> Location:
    """The V2-named manifest of `version` of the dataset at `loc`."""
    return loc.child("_versions", f"{_MAX_U64 - version:020d}.manifest")


def held(loc: Location, version: int | None = None) -> LanceDataset | None:
    """This process's handle on the dataset at `loc` (only if at `version`, when given)."""
    with _LOCK:
        ds = _handles().get(loc.uri)
    return ds if ds is not None and (version is None or ds.version == version) else None


def remember(loc: Location, ds: LanceDataset) -> None:
    """Hold `ds` (the latest version at `loc` a moment ago) unless a newer one is held."""
    version_cleanup.note(loc, ds)  # on a bucket: the files it names, for the cleanups to come
    with _LOCK:
        held_now = _handles()
        old = held_now.get(loc.uri)
        if old is None or old.version <= ds.version:
            held_now[loc.uri] = ds
            held_now.move_to_end(loc.uri)
            if loc.is_local:
                stamp = _stamp(loc, ds.version)
                if stamp is None:
                    _STAMPS.pop(loc.uri, None)
                else:
                    _STAMPS[loc.uri] = stamp
            while len(held_now) > _LIMIT:
                _STAMPS.pop(held_now.popitem(last=False)[0], None)


def stamp(loc: Location, version: int) -> tuple[int, int] | None:
    """(version, manifest mtime_ns) of the local handle at `loc` when it is at `version`, as
    `datasets.latest_stamp` gives them, without a stat; None otherwise."""
    with _LOCK:
        known = _STAMPS.get(loc.uri) if _PID == os.getpid() else None
    return None if known is None or known[0] != version else (known[0], known[1])


def forget(loc: Location) -> None:
    with _LOCK:
        _handles().pop(loc.uri, None)
        _STAMPS.pop(loc.uri, None)


def latest(loc: Location, open_latest: Callable[[], LanceDataset | None]) -> LanceDataset | None:
    """The dataset at `loc` at its latest version: the held handle when no newer version exists,
    else the newer version checked out through it; `open_latest()` (then held) when there is no
    handle or the probe cannot tell."""
    ds = held(loc)
    if ds is not None:
        version = _latest_version(loc, ds.version)
        if version == ds.version:
            return ds
        if version is not None and version > ds.version:  # (fewer: made again; open afresh)
            try:
                newer = ds.checkout_version(version)
            except (OSError, ValueError, RuntimeError):  # e.g. cleaned up meanwhile: open afresh
                newer = None
            if newer is not None:
                remember(loc, newer)
                return newer
        forget(loc)
    ds = open_latest()
    if ds is not None:
        remember(loc, ds)
    return ds


def _latest_version(loc: Location, version: int) -> int | None:
    """The latest version at `loc` as the probe sees it, given that `version` was the latest a
    moment ago; None when the probe cannot tell (the caller opens the dataset afresh)."""
    try:
        if loc.scheme == "s3":
            first = files.first_name(loc.child("_versions"))
            found = _V2_MANIFEST.match(first or "")
            return None if found is None else _MAX_U64 - int(found.group(1))
        if not loc.is_local:
            return None
        with _LOCK:
            known = _STAMPS.get(loc.uri)
        if known is None or _stamp(loc, version) != known:
            return None  # deleted (perhaps made again) or rewritten in place: open afresh
        for step in range(1, _LOCAL_WALK + 1):
            if not os.path.exists(local_manifest(loc, version + step)):
                return version + step - 1
    except StorageError:
        if loc.scheme == "s3":
            raise  # the bucket failed through fsspec's retries: an open would only spend a second budget
        return None
    except (ArtstoreError, OSError, ValueError):
        return None
    return None
