"""Per-process handles on the latest version of the datasets this process writes, so that a
writer's next open costs a probe: not a listing of `_versions/` (which grows with every version
kept), nor a manifest read when nothing changed.

A handle is the LanceDataset this process last committed (or opened at its latest) at a location.
`latest` reuses it when no newer version exists, and otherwise checks the newer version out
through it (same object store and session: no listing). The probe:

- locally, the stats of the handle's manifest (still there: the dataset was not deleted) and of
  the next version's (absent: nothing newer); Lance writes manifest v+1 only if it is absent, so
  versions are consecutive and this answers what a listing would;
- on S3, one LIST of `_versions/` limited to one key: Lance's V2 manifest names are
  `u64::MAX - version`, zero-padded, so the first key is the latest version's manifest, whatever
  the number of versions kept (Lance's own open lists every key, 1,000 per request);
- elsewhere (gs://, memory://) the caller's own open.

A handle is a snapshot like any LanceDataset: pinned to its version, safe to share across threads.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from lance import LanceDataset

from artstore.errors import ArtstoreError
from artstore.storage import files
from artstore.storage.location import Location

_MAX_U64 = 2**64 - 1
_V2_MANIFEST = re.compile(r"^(\d{20})\.manifest$")
_LOCAL_WALK = 64  # versions to step over by stats before a full open answers instead
_LIMIT = 256  # locations held at once (least recently used goes first)

_HANDLES: OrderedDict[str, LanceDataset] = OrderedDict()
_LOCK = threading.Lock()


def manifest(loc: Location, version: int) -> Location:
    """The V2-named manifest of `version` of the dataset at `loc`."""
    return loc.child("_versions", f"{_MAX_U64 - version:020d}.manifest")


def held(loc: Location, version: int | None = None) -> LanceDataset | None:
    """This process's handle on the dataset at `loc` (only if at `version`, when given)."""
    with _LOCK:
        ds = _HANDLES.get(loc.uri)
    return ds if ds is not None and (version is None or ds.version == version) else None


def remember(loc: Location, ds: LanceDataset) -> None:
    """Hold `ds` (the latest version at `loc` a moment ago) unless a newer one is held."""
    with _LOCK:
        old = _HANDLES.get(loc.uri)
        if old is None or old.version <= ds.version:
            _HANDLES[loc.uri] = ds
            _HANDLES.move_to_end(loc.uri)
            while len(_HANDLES) > _LIMIT:
                _HANDLES.popitem(last=False)


def forget(loc: Location) -> None:
    with _LOCK:
        _HANDLES.pop(loc.uri, None)


def latest(loc: Location, open_latest: Callable[[], LanceDataset | None]) -> LanceDataset | None:
    """The dataset at `loc` at its latest version: the held handle when no newer version exists,
    else the newer version checked out through it; `open_latest()` (then held) when there is no
    handle or the probe cannot tell."""
    ds = held(loc)
    if ds is not None:
        version = _latest_version(loc, ds.version)
        if version == ds.version:
            return ds
        if version is not None:
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
        if not loc.is_local or not files.exists(manifest(loc, version)):
            return None  # deleted (and perhaps made again): open afresh
        for step in range(1, _LOCAL_WALK + 1):
            if not files.exists(manifest(loc, version + step)):
                return version + step - 1
    except (ArtstoreError, OSError, ValueError):
        return None
    return None
