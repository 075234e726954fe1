"""Cleanup of old versions on S3 in a few requests, whatever the window holds.

Lance's `cleanup_old_versions` reads every manifest `_versions/` holds at each cleanup, lists five
folders, and deletes each file with a request of its own (pylance 14 on S3: one batch-delete
request per file). A run's journal makes a version, a manifest, a transaction file and a data
file per log, so on a bucket that was ~4 manifest reads and ~4.5 deletes per log (of ~26
requests), and the deletes grew with the run while its tables' compactions rewrote more.

Here, for a table whose versions hold no deletion files (appends, rewrites, config changes: a
run's journal and data tables), the same files go with:

- one LIST each of `_versions/` and `_transactions/` (per 1,000 files), and of `_refs/tags/`;
- one manifest read per version this process has not seen, once (the files a version this
  process committed or opened are noted from its manifest in memory: `note`);
- one batch delete per 1,000 files.

What is removed is what Lance's cleanup removes of verified files: the manifests older than the
window (by their `LastModified`, which is at or after the commit time, plus the second a
listing rounds it down by: a version is kept at least as long; the bucket's clock is taken to
agree with this host's to within that), except the latest and tagged ones and those newer than the version `ds` is at;
and the data and transaction files they name that no kept manifest names. Files no manifest
names (a commit that failed) are left for Lance's full cleanup (`compaction.maintain(force=True)`,
`artstore compact`), which also takes over for any version with a deletion file.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from lance import LanceDataset

from artstore.storage import files
from artstore.storage.failures import vanished
from artstore.storage.location import Location

_MAX_U64 = 2**64 - 1
_V2_MANIFEST = re.compile(r"^(\d{20})\.manifest$")
_V1_MANIFEST = re.compile(r"^(\d{1,19})\.manifest$")
# The manifest's transaction_file field: `{read_version}-{uuid}.txn` (no other manifest string
# has that shape: data files end in .lance, config values are artstore's own).
_TXN = re.compile(rb"\d{1,20}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.txn")
LISTED_RESOLUTION = timedelta(seconds=1)

# dataset uri -> version -> the files it names (relative to the dataset), or None: it names a
# deletion file (Lance's cleanup then runs instead)
_REFS: dict[str, OrderedDict[int, frozenset[str] | None]] = {}
_KEEP = 2048  # versions remembered per dataset (a reader window rarely holds more; older ones are read again)
_LOCK = threading.Lock()


def applies(loc: Location) -> bool:
    """Whether cleanups of the dataset at `loc` go through here: on S3 (a local listing and
    delete cost no request; gs:// keeps Lance's cleanup, untested here)."""
    return loc.scheme == "s3"


def _named(ds: LanceDataset) -> frozenset[str] | None:
    """The data and transaction files version `ds` names, from its manifest in memory."""
    found = set()
    for f in ds.get_fragments():
        if f.metadata.deletion_file is not None:
            return None
        found.update(sys.intern(f"data/{d.path}") for d in f.data_files())  # one string per file, not per version
    txn = _txn_name(ds._ds.serialized_manifest())  # pylance 14: not on LanceDataset itself
    if txn is not None:
        found.add(f"_transactions/{txn}")
    return frozenset(found)


def _txn_name(manifest: bytes) -> str | None:
    """The transaction file name in a serialized manifest: a protobuf string, so the byte before
    it is its length (which may itself read as a digit, e.g. 0x30 before a 48-byte name)."""
    found = _TXN.search(manifest)
    if found is None:
        return None
    for start in range(found.start(), found.end()):
        if start > 0 and manifest[start - 1] == found.end() - start:
            return manifest[start:found.end()].decode()
    return found.group().decode()


def note(loc: Location, ds: LanceDataset) -> None:
    """Remember the files version `ds` of the dataset at `loc` names (no request): a writer's
    commits and opens, so that its cleanups read no manifest of them."""
    if not applies(loc):
        return
    with _LOCK:
        if ds.version in _REFS.get(loc.uri, ()):
            return
    named = _named(ds)
    with _LOCK:
        kept = _REFS.setdefault(loc.uri, OrderedDict())
        kept[ds.version] = named
        while len(kept) > _KEEP:
            kept.popitem(last=False)


def _versions(loc: Location) -> dict[int, tuple[datetime, str]]:
    """{version: (its manifest's LastModified (UTC), its name)} of every manifest under `_versions/`."""
    found = {}
    for name, modified in files.list_modified(loc.child("_versions")).items():
        if m := _V2_MANIFEST.match(name):
            found[_MAX_U64 - int(m.group(1))] = (modified, name)
        elif m := _V1_MANIFEST.match(name):
            found[int(m.group(1))] = (modified, name)
    return found


def cleanup(loc: Location, ds: LanceDataset, older_than: timedelta) -> int | None:
    """Remove the versions of the dataset at `loc` (`ds`: a recent version of it) older than
    `older_than`, as `LanceDataset.cleanup_old_versions` would remove them (see the module doc).
    Returns the versions removed, or None when a version names a deletion file (nothing removed:
    the caller runs Lance's cleanup)."""
    listed = _versions(loc)
    if not listed:
        return 0
    tagged = {info["version"] for info in ds.tags.list().values()}
    # LIST gives LastModified in whole seconds (S3): a manifest may be up to 1 s younger than it says
    latest, cutoff = max(listed), datetime.now(UTC) - older_than - LISTED_RESOLUTION
    old = sorted(v for v, (at, _) in listed.items() if at < cutoff and v != latest and v < ds.version and v not in tagged)
    if not old:
        return 0
    with _LOCK:
        cached = dict(_REFS.get(loc.uri, {}))
    if any(v in cached and cached[v] is None for v in listed):
        return None
    # A remembered version counts while its transaction file is there: a table deleted and made
    # again reuses version numbers, never transaction file names (a uuid each).
    txns = {f"_transactions/{n}" for n in files.list_modified(loc.child("_transactions"))}
    known = {v: named for v, named in cached.items() if named is not None and any(p in txns for p in named)}
    for v in listed.keys() - known.keys():  # read once: versions another process (or Lance's compaction) made
        try:
            known[v] = _named(ds.checkout_version(v))
        except (OSError, ValueError) as e:
            if not vanished(e):
                raise
            listed.pop(v)  # removed meanwhile (another process's cleanup)
            continue
        with _LOCK:
            _REFS.setdefault(loc.uri, OrderedDict())[v] = known[v]
    old = [v for v in old if v in listed]
    if any(known[v] is None for v in listed):
        return None
    kept = frozenset().union(*(known[v] for v in listed if v not in old))
    gone = frozenset().union(*(known[v] for v in old)) - kept
    manifests = [loc.child("_versions", listed[v][1]) for v in old]
    # the manifests first: a version whose files went first would be listed but unreadable
    files.delete_files([*manifests, *(loc.child(*p.split("/")) for p in sorted(gone))])
    with _LOCK:
        mine = _REFS.get(loc.uri, {})
        for v in old:
            mine.pop(v, None)
    return len(old)
