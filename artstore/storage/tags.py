"""Tags of a Lance dataset: names that pin a version, so that cleanup keeps it.

A tag never names a removed version: tagging holds `CLEANUP_LOCK` (which this process's cleanup
holds too) and opens the tagged version afterwards, removing the tag when it is gone.
"""

from __future__ import annotations

import contextlib
import threading

from artstore.errors import StorageError, VersionNotFoundError
from artstore.storage import datasets
from artstore.storage.failures import storage_errors
from artstore.storage.location import Location

# Held while tagging, and while cleaning up (`compaction.maintain`): a cleanup reads the tags when
# it starts, so a tag made meanwhile on a version it then removes would point at nothing.
CLEANUP_LOCK = threading.Lock()


def create_tag(loc: Location, name: str, version: int | None = None) -> int:
    """Tag `version` (default: latest). Tagged versions survive cleanup. Returns the version.

    Never leaves a tag on a removed version: tagging waits for a cleanup of this process to end,
    and the tagged version is opened afterwards (a cleanup of another process may have removed
    it); VersionNotFoundError, and no tag, when it is gone."""
    with CLEANUP_LOCK:
        ds = datasets.open_dataset(loc)
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
            datasets.open_dataset(loc, version=name)
        except (VersionNotFoundError, StorageError):
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                ds.tags.delete(name)
            raise VersionNotFoundError(f"{loc.uri} has no version {target} any more (cleaned up); "
                                       "tag a version inside the retention window (Run.versions())") from None
        return target


def tags(loc: Location) -> dict[str, int]:
    ds = datasets.open_dataset(loc)
    return {} if ds is None else {k: v["version"] for k, v in ds.tags.list().items()}
