"""Cleanup of old versions on a bucket (`artstore.storage.version_cleanup`): a few requests per
cleanup however many versions it removes or keeps (Lance's own reads every manifest and deletes
each file with a request of its own), and it removes exactly the files of the old versions that
no kept version names: every kept version still reads whole, tags are kept, a table deleted and
made again loses nothing."""

from __future__ import annotations

import time
from datetime import timedelta

import lance
import pyarrow as pa
import pytest

from artstore.storage import (
    Location,
    compaction,
    datasets,
    files,
    version_cleanup,
    version_map,
    writes,
)

pytestmark = pytest.mark.s3

WINDOW = timedelta(seconds=1)
# old enough for sure: a listing's LastModified is in whole seconds, so a cleanup counts a version
# old only past the window plus that second
AGED_S = (WINDOW + version_cleanup.LISTED_RESOLUTION).total_seconds() + 0.5


def _table(faulty_s3, name: str) -> Location:
    return Location(faulty_s3.uri, faulty_s3.storage_options).child(name, "t.lance")


def _append(loc: Location, rows: int, start: int = 0) -> None:
    for i in range(start, start + rows):
        table = pa.table({"i": [i]})
        if datasets.open_latest(loc) is None:
            writes.create(loc, table)
        else:
            writes.append(loc, table)


def _cleanup_requests(faulty_s3, loc: Location) -> tuple[int, int]:
    """(requests, versions removed) of one cleanup as `log()`'s upkeep runs it."""
    compaction._last_cleanup.pop(loc.uri, None)
    before = faulty_s3.proxy.requests
    done = compaction.maintain(loc, "t", WINDOW, compact=False)
    return faulty_s3.proxy.requests - before, done["removed_versions"]


def _files_named_by_kept_versions(loc: Location) -> set[str]:
    ds = lance.dataset(loc.uri, storage_options=loc.lance_options())
    return {r["path"] for r in ds._ds.tracked_files().read_all().to_pylist()}


def _files_there(loc: Location) -> set[str]:
    return {f for f in files.walk(loc) if f.startswith(("data/", "_transactions/", "_versions/"))
            and not f.endswith("latest_version_hint.json")}


def test_a_cleanup_on_a_bucket_makes_the_same_few_requests_however_many_versions_it_removes(faulty_s3):
    counts = []
    for name, versions in (("short", 6), ("long", 40)):
        loc = _table(faulty_s3, name)
        _append(loc, versions)
        time.sleep(AGED_S)
        _append(loc, 2, start=versions)  # inside the window: kept
        requests, removed = _cleanup_requests(faulty_s3, loc)
        assert removed == versions  # every version older than the window
        counts.append(requests)
    # the handle's probes, LISTs of _refs/tags, _versions and _transactions, one batch delete
    # (Lance's own: LISTs of 7 folders, a GET of each manifest, a request per file: 33 and 135 here)
    assert counts[0] == counts[1] <= 8, counts


def test_a_cleanup_on_a_bucket_removes_exactly_the_files_only_old_versions_named(faulty_s3):
    loc = _table(faulty_s3, "exact")
    _append(loc, 12)
    compaction.maintain(loc, "t", timedelta(days=1), force=True, cleanup=False)  # a Rewrite: old data files
    _append(loc, 3, start=12)
    datasets.open_latest(loc).tags.create("kept", 5)
    time.sleep(AGED_S)
    _append(loc, 2, start=15)
    kept_before = {v: datasets.open_dataset(loc, version=v).to_table()["i"].to_pylist() for v in (5, 18, 19)}
    _, removed = _cleanup_requests(faulty_s3, loc)
    left = [v["version"] for v in datasets.versions(loc)]
    assert removed == 19 - 3 and left == [5, 18, 19]
    for v, rows in kept_before.items():  # every file of every kept version is there
        assert datasets.open_dataset(loc, version=v).to_table()["i"].to_pylist() == rows
    assert _files_there(loc) == _files_named_by_kept_versions(loc)  # and nothing else


def test_a_table_deleted_and_made_again_keeps_its_files_through_a_cleanup(faulty_s3):
    """The versions remembered of the first table (same numbers, other files) are not taken for
    the second's: a remembered version counts only while its transaction file is there."""
    loc = _table(faulty_s3, "again")
    _append(loc, 8)
    files.delete(loc)
    _append(loc, 4, start=100)  # versions 1-4 again, other files
    time.sleep(AGED_S)
    _append(loc, 1, start=104)
    _, removed = _cleanup_requests(faulty_s3, loc)
    assert removed == 4
    assert sorted(datasets.open_dataset(loc).to_table()["i"].to_pylist()) == list(range(100, 105))
    assert _files_there(loc) == _files_named_by_kept_versions(loc)


def test_a_version_with_a_deletion_file_is_left_to_lances_cleanup(faulty_s3):
    loc = _table(faulty_s3, "deleted")
    _append(loc, 3)
    writes.append(loc, pa.table({"i": [3, 30]}))
    lance.dataset(loc.uri, storage_options=loc.lance_options()).delete("i = 30")  # a deletion file
    time.sleep(AGED_S)
    _append(loc, 1, start=4)
    ds = datasets.open_latest(loc)
    assert version_cleanup.cleanup(loc, ds, WINDOW) is None  # nothing removed here
    _, removed = _cleanup_requests(faulty_s3, loc)  # Lance's cleanup did it
    assert removed == 5
    assert sorted(datasets.open_dataset(loc).to_table()["i"].to_pylist()) == [0, 1, 2, 3, 4]


def test_the_version_map_on_a_bucket_reads_none_of_its_own_files_back(faulty_s3):
    """`version_map.record` (before each cleanup of a journal) lists its folder and writes one
    file; the files it wrote are not read back, and a merge deletes its files in one request."""
    loc = _table(faulty_s3, "mapped")
    proxy = faulty_s3.proxy
    proxy.seen = seen = []
    _append(loc, 1)
    for i in range(1, 3 * version_map.MERGE_AFTER):
        _append(loc, 1, start=i)
        before = len(seen)
        assert version_map.record(loc, datasets.open_latest(loc)) >= 1
        made = [("LIST" if "list-type" in p else m, p) for m, p in seen[before:] if version_map.MAP_DIR in p or m == "POST"]
        assert not [m for m, _ in made if m in ("GET", "HEAD")], made  # nothing read back
        assert len(made) <= 5, made  # a LIST and a PUT; a merge adds a LIST, a PUT and one batch delete
    assert len(files.list_dir(loc.child(version_map.MAP_DIR))) <= version_map.MERGE_AFTER + 1
    assert version_map.entries(loc)["version"].to_pylist() == list(range(1, 3 * version_map.MERGE_AFTER + 1))


@pytest.mark.parametrize("read_version", [0, 12, 1_000_000, 10**12])
def test_a_transaction_file_name_is_read_whole_from_its_manifest_bytes(read_version):
    """A protobuf string: its length byte is 0x30-0x39 ('0'-'9') for 48-57-byte names."""
    name = f"{read_version}-0123abcd-0123-4567-89ab-0123456789ab.txn"
    manifest = b"\x08\x02\x62" + bytes([len(name)]) + name.encode() + b"\x6a\x00"
    assert version_cleanup._txn_name(manifest) == name
