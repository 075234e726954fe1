"""Checkpoint files through fsspec: atomic puts, get, delete, size, listings, on local disk, on moto
S3, on fake-gcs-server (gs://), and through the fault proxy."""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time

import pytest

from artstore.checkpoints.table import CheckpointTable
from artstore.errors import StorageError
from artstore.storage import Location, files
from artstore.storage.location import LANCE_DEFAULTS

MB = 1024 * 1024


def _loc(store_location, *parts: str) -> Location:
    uri, opts = store_location
    return Location.parse(uri, opts).child(*parts)


def _gs(gcs_bucket) -> Location:
    return Location.parse(gcs_bucket.uri, {"google_endpoint": gcs_bucket.endpoint, "google_skip_signature": True,
                                           "google_project": gcs_bucket.project})


def _poll_while(write, loc: Location, size: int) -> tuple[int, set[bytes]]:
    """Run `write(overlapped)` in a thread while this one reads `loc` as fast as it can (`overlapped()`:
    how many full reads overlapped the write so far). Returns how many reads overlapped the write,
    and the set of first bytes of every full read (each read checked whole)."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            write()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    seen: set[bytes] = set()
    overlapped = 0
    t = threading.Thread(target=run)
    write = functools.partial(write, lambda: overlapped)
    t.start()
    while not done.is_set():
        try:
            data = files.get_bytes(loc)
        except StorageError:
            continue  # not there yet
        overlapped += not done.is_set()
        assert len(data) == size, f"a reader saw {len(data)} of {size} bytes"
        assert data.count(data[:1]) == size, "a reader saw a mix of two writes"
        names = files.list_dir(Location(loc.uri.rsplit("/", 1)[0], loc.storage_options))
        assert all(files.TMP_MARK not in n for n in names), names
        seen.add(data[:1])
    t.join()
    assert not errors, errors
    return overlapped, seen


@pytest.mark.parametrize("how", ["put_bytes", "put_file"])
def test_a_reader_polling_during_large_writes_never_sees_a_partial_file(store_location, tmp_path, how):
    size = (32 if store_location.kind == "local" else 12) * MB
    loc = _loc(store_location, "ckpt", "0001", "adapter.bin")
    files.put_bytes(loc, b"a" * size)
    srcs = []
    for c in b"bcdefg":  # six writes: on an idle machine three could all finish between two reads
        src = tmp_path / f"{chr(c)}.bin"
        src.write_bytes(bytes([c]) * size)
        srcs.append(src)

    last: list[bytes] = []

    def write(overlapped):
        # Every source once, then on until two reads overlapped (at most four rounds): under load
        # one round can finish between two reads, and the check below would then be vacuous.
        for i in range(4 * len(srcs)):
            src = srcs[i % len(srcs)]
            if how == "put_bytes":
                files.put_bytes(loc, src.read_bytes())
            else:
                files.put_file(loc, src)
            last[:] = [src.read_bytes()[:1]]
            if i >= len(srcs) - 1 and overlapped() >= 2:
                break

    overlapped, seen = _poll_while(write, loc, size)
    assert overlapped >= 2, "the reader never raced the writer: make the file larger"
    assert files.get_bytes(loc) == last[0] * size
    assert seen <= {bytes([c]) for c in b"abcdefg"}


def test_a_failed_local_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    loc = Location.parse(tmp_path / "store").child("ckpt", "adapter.bin")
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * MB)

    def half_then_fail(fsrc, fdst, length=0):
        fdst.write(fsrc.read(MB // 2))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", half_then_fail)
    with pytest.raises(StorageError, match="disk full"):
        files.put_file(loc, src)
    assert os.listdir(tmp_path / "store" / "ckpt") == []


def test_files_round_trip_list_glob_size_and_delete(store_location, tmp_path):
    ckpt = _loc(store_location, "p", "models", "m", "checkpoints", "0003")
    files.put_bytes(ckpt.child("adapter_config.json"), b"{}")
    files.put_bytes(ckpt.child("adapter_model.safetensors"), b"w" * 1000)
    assert files.list_dir(ckpt) == ["adapter_config.json", "adapter_model.safetensors"]
    assert files.glob(_loc(store_location), "*/models/*/checkpoints/*/adapter_config.json") == [
        "p/models/m/checkpoints/0003/adapter_config.json"]
    assert files.size(ckpt) == 1002 and files.size(ckpt.child("adapter_config.json")) == 2
    files.get_file(ckpt.child("adapter_model.safetensors"), tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"w" * 1000
    files.delete(ckpt)
    assert not files.exists(ckpt.child("adapter_config.json"))
    assert files.list_dir(ckpt) == [] and files.size(ckpt) == 0
    files.delete(ckpt)  # missing is fine


# -- gs:// on fake-gcs-server ------------------------------------------------------------------------

def test_gcs_files_put_get_size_list_and_delete(gcs_bucket, tmp_path):
    ckpt = _gs(gcs_bucket).child("p", "models", "m", "checkpoints", "0001")
    src = tmp_path / "adapter_model.safetensors"
    src.write_bytes(os.urandom(3 * MB))
    files.put_file(ckpt.child(src.name), src)
    files.put_bytes(ckpt.child("adapter_config.json"), b'{"r": 8}')
    assert files.list_dir(ckpt) == ["adapter_config.json", "adapter_model.safetensors"]
    assert files.size(ckpt) == 3 * MB + 8
    assert files.get_bytes(ckpt.child("adapter_config.json")) == b'{"r": 8}'
    files.get_file(ckpt.child(src.name), tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    # what gcsfs itself sees, with the fixture's own arguments
    assert gcs_bucket.filesystem().cat(f"{gcs_bucket.bucket}/store/p/models/m/checkpoints/0001/adapter_config.json") == b'{"r": 8}'
    files.delete(ckpt)
    assert not files.exists(ckpt.child(src.name)) and files.list_dir(ckpt) == []


def test_gcs_overwrite_is_atomic_for_a_polling_reader(gcs_bucket):
    size = 8 * MB
    loc = _gs(gcs_bucket).child("adapter.bin")
    files.put_bytes(loc, b"a" * size)

    def write(overlapped):
        for _ in range(10):  # until a read overlapped (under load one pair may finish between two reads)
            for c in b"bc":
                files.put_bytes(loc, bytes([c]) * size)
            if overlapped() >= 1:
                return

    overlapped, seen = _poll_while(write, loc, size)
    assert overlapped >= 1
    assert seen <= {b"a", b"b", b"c"}
    assert files.get_bytes(loc) == b"c" * size


@pytest.mark.parametrize("tables_on", ["local", "s3"])
def test_checkpoint_files_on_gcs_for_a_run_whose_tables_are_elsewhere(tables_on, request, tmp_path, gcs_bucket):
    gs = _gs(gcs_bucket)
    if tables_on == "local":
        run = Location.parse(tmp_path / "store", gs.storage_options).child("p", "models", "m")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        run = Location.parse(bucket.uri, {**bucket.storage_options, **gs.storage_options}).child("p", "models", "m")
    table = CheckpointTable(run)
    c = table.begin(5, uri=f"gs://{gcs_bucket.bucket}/ckpts/0005/")
    assert c.uri == f"gs://{gcs_bucket.bucket}/ckpts/0005" and c.status == "saving"
    files.put_bytes(table.location_of(c.uri).child("adapter_model.safetensors"), b"z" * 4096)
    ready = table.mark_ready(5)  # size measured on GCS, with the run's one mapping
    assert ready.size_bytes == 4096 and table.latest().step == 5
    files.delete(table.location_of(c.uri))
    table.mark_deleted({5: "test"})
    assert table.get(5).status == "deleted" and not files.exists(table.location_of(c.uri))


# -- faults ------------------------------------------------------------------------------------------

def _default_knobs(bucket) -> dict[str, str]:
    """The bucket's options without the fixture's fast-fail knobs: artstore's defaults apply."""
    return {k: v for k, v in bucket.storage_options.items() if k not in LANCE_DEFAULTS}


@pytest.mark.parametrize("fault", ["fail_next", "drop_next"])
def test_s3_file_writes_and_reads_ride_out_transient_faults(faulty_s3, fault):
    loc = Location.parse(faulty_s3.uri, _default_knobs(faulty_s3)).child("ckpt", "adapter.bin")
    getattr(faulty_s3.proxy, fault)(2)
    files.put_bytes(loc, b"q" * MB)
    getattr(faulty_s3.proxy, fault)(2)
    assert files.get_bytes(loc) == b"q" * MB
    assert faulty_s3.proxy.faults == 4


def test_s3_file_write_fails_clearly_and_in_bounded_time_when_the_server_keeps_failing(faulty_s3):
    # client_max_retries bounds s3fs as it bounds Lance (with the default, 5, this takes ~20 s).
    loc = Location.parse(faulty_s3.uri, {**_default_knobs(faulty_s3), "client_max_retries": 2}).child("ckpt", "a.bin")
    files.put_bytes(loc, b"old")
    faulty_s3.proxy.fail_all()
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        files.put_bytes(loc, b"new")
    assert time.monotonic() - start < 20
    assert 3 <= faulty_s3.proxy.faults <= 6  # a few tries, not 5 x 6 of them
    assert loc.uri in str(err.value) and "kept failing" in str(err.value) and "client_max_retries=2" in str(err.value)
    faulty_s3.proxy.pass_through()
    assert files.get_bytes(loc) == b"old"


def test_deleting_files_that_another_deleter_removes_meanwhile_is_fine(tmp_path, monkeypatch):
    """Two merges of a version map (or a merge and a cleanup) delete the same files: the one that
    comes second must not fail on a file the first removed between its look and its delete."""
    folder = Location.parse(tmp_path / "store").child("map")
    locs = [folder.child(n) for n in ("c", "a", "b")]  # "c" never existed: the batch rm refuses it
    for loc in locs[1:]:
        files.put_bytes(loc, b"x")
    fs_type = type(files.filesystem(locs[0]))
    real_rm = fs_type.rm

    def rm(self, path, *args, **kwargs):
        if isinstance(path, str) and path.endswith("/b"):
            os.remove(path)  # the other deleter goes first
        return real_rm(self, path, *args, **kwargs)

    monkeypatch.setattr(fs_type, "rm", rm)
    files.delete_files(locs)
    assert files.list_dir(folder) == []
