"""Tags of a run's `logs` table: names for a point of the run, logical by default, pinned on request.

A **logical tag** is a small record, `logs.lance/_artstore_tags/{name}.json`: the logs version it
names, when that version was committed (UTC), and its sequence bound `seq_hi` (the largest
fragment id that version held). The logs are append-only and each row keeps its commit sequence
(`keys.SEQ`), so the logs of that version are exactly the rows of any later version whose
sequence is at most `seq_hi` (the rule `version_map` answers removed versions by). The record
answers the tag after cleanup removed the version, and keeps no physical version.

A **pinned tag** is the same record plus a Lance tag of the same name, which keeps the physical
version through cleanup (`cleanup_old_versions` skips tagged versions). A Lance tag without a
record (made before logical tags) is a pinned tag and reads as before. A logs table without a SEQ
column (written before the journal) has no commit sequence to answer by: its tags are always pinned.

Concurrency: a record is written whole or not at all (`files.put_bytes`: rename locally, one PUT
on a bucket), one file per name, so processes tagging different names never meet; two tagging
one name leave the last write (as moving a tag does). A tag's bounds are read from the version's
manifest while it exists, else from the version map, which a cleanup writes before it removes
anything: a logical tag never names a point it cannot answer. A pinned tag is made as before
(`CLEANUP_LOCK`, then the version opened again; refused, with no tag left, when it is gone).
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from artstore.errors import StorageError, VersionNotFoundError
from artstore.names import TAG_NAME
from artstore.storage import datasets, files, version_map
from artstore.storage.failures import storage_errors
from artstore.storage.keys import SEQ, last_fragment_id
from artstore.storage.location import Location
from artstore.storage.version_map import Pinned

TAGS_DIR = "_artstore_tags"
# Held while pinning, and while cleaning up (`compaction.maintain`): a cleanup reads the Lance tags
# when it starts, so a pin made meanwhile on a version it then removes would point at nothing.
CLEANUP_LOCK = threading.Lock()


class Tag(int):
    """A tag of a run as `Run.tags()` lists it: the logs version it names (it is that int, so it
    compares, hashes and serialises as the version, as tags were listed before), with `pinned`
    (a Lance tag keeps that physical version through cleanup) and `committed_at` (when the version
    was committed, UTC; None for a pinned tag made before logical tags)."""

    pinned: bool
    committed_at: datetime | None

    def __new__(cls, version: int, pinned: bool, committed_at: datetime | None = None) -> Tag:
        tag = super().__new__(cls, version)
        tag.pinned, tag.committed_at = pinned, committed_at
        return tag

    def __getnewargs__(self) -> tuple[int, bool, datetime | None]:  # pickle and copy keep the fields
        return int(self), self.pinned, self.committed_at

    def __repr__(self) -> str:
        return f"Tag(version={int(self)}, pinned={self.pinned})"


@dataclass(frozen=True)
class _Record:
    """A logical tag's record: `version` of the logs, its commit time (UTC), and `seq_hi`."""

    version: int
    committed_at: datetime
    seq_hi: int
    pinned: bool

    def to_bytes(self, tagged_at: datetime) -> bytes:
        return json.dumps({"version": self.version, "committed_at": self.committed_at.isoformat(),
                           "seq_hi": self.seq_hi, "pinned": self.pinned, "tagged_at": tagged_at.isoformat()}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Record:
        got = json.loads(data)
        return cls(int(got["version"]), datetime.fromisoformat(got["committed_at"]).astimezone(UTC),
                   int(got["seq_hi"]), bool(got["pinned"]))


def _record_location(loc: Location, name: str) -> Location:
    return loc.child(TAGS_DIR).child(f"{name}.json")


def _record(loc: Location, name: str) -> _Record | None:
    """The record of the logical tag `name` of the table at `loc` (one read); None when there is
    none (or `name` cannot be a tag's: an older Lance tag's name, or no tag at all)."""
    if not TAG_NAME.fullmatch(name):
        return None
    data = files.get_bytes_or_none(_record_location(loc, name))
    if data is None:
        return None
    try:
        return _Record.from_bytes(data)
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"the record of tag {name!r} in {loc.redact(loc.uri)} is damaged ({e}); "
                           "tag that point again (Run.tag) to replace it") from None


def _records(loc: Location) -> dict[str, _Record]:
    """Every logical tag's record of the table at `loc` (one listing, one read each)."""
    out = {}
    for file in files.list_dir(loc.child(TAGS_DIR)):
        name = file.removesuffix(".json")
        if file.endswith(".json") and (found := _record(loc, name)) is not None:
            out[name] = found
    return out


def _point(loc: Location, version: int) -> Pinned:
    """`version` of the table at `loc` (physically, else through the version map), with its
    bounds; VersionNotFoundError saying what to do when neither has it."""
    try:
        pinned = version_map.open_version(loc, version)
    except VersionNotFoundError:
        pinned = None
    if pinned is None:
        raise VersionNotFoundError(
            f"{loc.redact(loc.uri)} has no version {version} (never made, or cleaned up before the run "
            "had a version map); tag a version that Run.versions() lists, or leave the version out to "
            "tag the latest") from None
    return pinned


def create_tag(loc: Location, name: str, version: int | None = None, pin: bool = False) -> Tag:
    """Tag `version` (default: latest) of the table at `loc` as `name` (a checked tag name),
    replacing a tag of that name. Logical unless `pin` (or the table has no SEQ column): a record
    that answers the point after cleanup, keeping no version. Pinned: a Lance tag too, which keeps
    the physical version; VersionNotFoundError, and no tag, when that version is gone already."""
    latest = datasets.open_dataset(loc)
    if latest is None:
        raise VersionNotFoundError(f"{loc.redact(loc.uri)} does not exist yet: nothing to tag (log first)")
    pin = pin or SEQ not in latest.schema.names
    point = _point(loc, latest.version if version is None else version)
    seq_hi = point.upto if point.upto is not None else last_fragment_id(point.dataset)
    record = _Record(point.version, point.committed_at, seq_hi, pin)
    if pin:
        if point.upto is not None:
            raise VersionNotFoundError(
                f"{loc.redact(loc.uri)} no longer keeps version {point.version} (cleaned up after the reader "
                "window): it cannot be pinned; tag it without pin (a logical tag still answers it)")
        with CLEANUP_LOCK:
            _pin(loc, latest, name, point.version)
    files.put_bytes(_record_location(loc, name), record.to_bytes(datetime.now(UTC)))
    if not pin:
        _unpin(loc, name)  # re-tagged without pin: the version it pinned may go now
    return Tag(record.version, pin, record.committed_at)


def _pin(loc: Location, ds: Any, name: str, version: int) -> None:
    """A Lance tag `name` on `version`, never left on a removed version: made under
    CLEANUP_LOCK (held by the caller), then the version opened through it (a cleanup of another
    process may have removed it); VersionNotFoundError, and the Lance tag removed, when it is gone."""
    try:
        with storage_errors(loc, "tag"):
            if name in ds.tags.list():
                ds.tags.update(name, version)
            else:
                ds.tags.create(name, version)
    except StorageError as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            raise VersionNotFoundError(f"{loc.redact(loc.uri)} has no version {version} any more (cleaned up); "
                                       "tag it without pin (a logical tag still answers it)") from None
        raise
    try:
        datasets.open_dataset(loc, version=name)
    except (VersionNotFoundError, StorageError):
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            ds.tags.delete(name)
        raise VersionNotFoundError(f"{loc.redact(loc.uri)} has no version {version} any more (cleaned up); "
                                   "tag it without pin (a logical tag still answers it)") from None


def _unpin(loc: Location, name: str) -> None:
    ds = datasets.open_dataset(loc)
    with storage_errors(loc, "untag"):
        if ds is not None and name in ds.tags.list():
            ds.tags.delete(name)


def delete_tag(loc: Location, name: str) -> Tag:
    """Remove the tag `name` of the table at `loc`: its record and, when pinned, its Lance tag (the
    version it kept is then cleaned up after the window, as any other). Returns the Tag it named;
    VersionNotFoundError when there is no such tag."""
    ds, physical = _physical_tags(loc)
    record = _record(loc, name)  # this one record, not every tag's
    if record is None and name not in physical:
        raise VersionNotFoundError(f"{loc.redact(loc.uri)} has no tag {name!r}; Run.tags() lists them")
    if name in physical:  # first: a stop between the two leaves a logical tag, which still answers
        with storage_errors(loc, "untag"):
            ds.tags.delete(name)
    if record is not None:
        files.delete(_record_location(loc, name), recursive=False)
    return _tag(record, physical.get(name))


def tags(loc: Location) -> dict[str, Tag]:
    """{name: Tag} of the table at `loc`: the logical ones (their records) and the Lance tags
    (pinned; a record's tag is pinned while its Lance tag names the same version)."""
    ds, physical = _physical_tags(loc)
    if ds is None:
        return {}
    out = {name: _tag(None, v) for name, v in physical.items()}
    for name, r in _records(loc).items():
        out[name] = _tag(r, physical.get(name))
    return dict(sorted(out.items()))


def _physical_tags(loc: Location) -> tuple[Any, dict[str, int]]:
    """(the latest dataset at `loc` or None, {name: version} of its Lance tags)."""
    ds = datasets.open_dataset(loc)
    if ds is None:
        return None, {}
    with storage_errors(loc, "list the tags of"):
        return ds, {k: v["version"] for k, v in ds.tags.list().items()}


def _tag(record: _Record | None, physical: int | None) -> Tag:
    """A tag from its record and/or the version its Lance tag names (at least one of them)."""
    if record is None:
        return Tag(physical, True)
    return Tag(record.version, physical == record.version, record.committed_at)


def open_tag(loc: Location, name: str, session: Any = None) -> Pinned | None:
    """The table at `loc` at the point tag `name` names: its version read physically while Lance
    keeps it, else (a logical tag after cleanup) the latest version bounded by the record's
    `seq_hi` (`Pinned.upto`). None when the table does not exist; VersionNotFoundError when
    there is no such tag."""
    record = _record(loc, name)
    if record is None:  # a Lance tag (pinned, or made before logical tags)
        try:
            return version_map.open_version(loc, name, session=session)
        except VersionNotFoundError:
            raise VersionNotFoundError(f"{loc.redact(loc.uri)} has no tag {name!r}; Run.tags() lists them "
                                       "(artstore versions RUN shows each version's tags)") from None
    try:
        return version_map.open_version(loc, record.version, session=session)
    except VersionNotFoundError:
        latest = datasets.open_dataset(loc, session=session)
        if latest is None:
            return None
        if SEQ not in latest.schema.names:  # no commit sequence to bound by (its tags are pinned: see above)
            raise
        return Pinned(latest, record.version, record.committed_at, record.seq_hi)


def open_version(loc: Location, version: int | str | None = None, asof: datetime | None = None,
                 session: Any = None) -> Pinned | None:
    """`version_map.open_version`, with a tag (a str) read at its point (`open_tag`)."""
    if isinstance(version, str):
        return open_tag(loc, version, session)
    return version_map.open_version(loc, version, asof, session)


def committed_at(loc: Location, version: int | str) -> datetime:
    """When `version` (a number or tag) of the table at `loc` was committed (UTC)."""
    pinned = open_version(loc, version)
    if pinned is None:
        raise VersionNotFoundError(f"{loc.redact(loc.uri)} does not exist")
    return pinned.committed_at
