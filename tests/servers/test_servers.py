"""The test servers work for real: Lance, s3fs and gcsfs against each, faults included."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

import botocore.exceptions
import lance
import pyarrow as pa
import pytest

from ._process import ServerProcess

pytestmark = pytest.mark.s3


def _table(start: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()), "v": [0.5] * n})


def _read(uri: str, storage_options: dict[str, str]) -> tuple[int, list[int]]:
    ds = lance.dataset(uri, storage_options=storage_options)
    return ds.version, sorted(ds.to_table(columns=["id"])["id"].to_pylist())


def _listening_addresses(pid: int) -> set[str]:
    """Local "ip:port" of every TCP socket ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                hex_ip, hex_port = local.split(":")
                if len(hex_ip) == 8:
                    ip = ".".join(str(b) for b in bytes.fromhex(hex_ip)[::-1])
                else:
                    ip = hex_ip  # IPv6: reported as-is, never 127.0.0.1
                found.add(f"{ip}:{int(hex_port, 16)}")
    return found


# -- moto ------------------------------------------------------------------------------------


def test_lance_writes_and_reads_dataset_on_moto(s3_bucket):
    lance.write_dataset(_table(0, 10), s3_bucket.uri, storage_options=s3_bucket.storage_options)
    lance.write_dataset(
        _table(10, 5), s3_bucket.uri, mode="append", storage_options=s3_bucket.storage_options
    )
    assert _read(s3_bucket.uri, s3_bucket.storage_options) == (2, list(range(15)))


def test_s3fs_puts_and_gets_files_on_moto(s3_bucket, tmp_path):
    fs = s3_bucket.filesystem()
    src = tmp_path / "adapter.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    remote = f"{s3_bucket.bucket}/ckpt/0001/adapter.bin"
    fs.put(str(src), remote)
    fs.get(remote, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert fs.ls(f"{s3_bucket.bucket}/ckpt/0001") == [remote]


def test_each_test_gets_a_fresh_empty_bucket(s3_bucket):
    assert s3_bucket.boto3_client().list_objects_v2(Bucket=s3_bucket.bucket)["KeyCount"] == 0


# -- SeaweedFS -------------------------------------------------------------------------------


def test_lance_writes_and_reads_dataset_on_seaweedfs(seaweed_bucket):
    opts = seaweed_bucket.storage_options
    lance.write_dataset(_table(0, 10), seaweed_bucket.uri, storage_options=opts)
    lance.write_dataset(_table(10, 5), seaweed_bucket.uri, mode="append", storage_options=opts)
    assert _read(seaweed_bucket.uri, opts) == (2, list(range(15)))


def test_seaweedfs_rejects_a_wrong_secret(seaweedfs, seaweed_bucket):
    with pytest.raises(botocore.exceptions.ClientError) as err:
        seaweedfs.client(secret_access_key="not-the-secret").list_objects_v2(
            Bucket=seaweed_bucket.bucket
        )
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    wrong = {**seaweed_bucket.storage_options, "aws_secret_access_key": "not-the-secret"}
    with pytest.raises(OSError, match="SignatureDoesNotMatch"):
        lance.write_dataset(_table(0, 3), seaweed_bucket.uri, storage_options=wrong)


def test_seaweedfs_keeps_a_committed_dataset_across_sigkill_and_restart(seaweedfs, seaweed_bucket):
    opts, uri = seaweed_bucket.storage_options, seaweed_bucket.uri
    lance.write_dataset(_table(0, 10), uri, storage_options=opts)
    lance.write_dataset(_table(10, 10), uri, mode="append", storage_options=opts)
    pid = seaweedfs.pid
    seaweedfs.kill()
    assert not seaweedfs.alive
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped: no zombie
    seaweedfs.restart()
    assert _read(uri, opts) == (2, list(range(20)))
    lance.write_dataset(_table(20, 1), uri, mode="append", storage_options=opts)
    assert _read(uri, opts) == (3, list(range(21)))


# -- fault proxy -----------------------------------------------------------------------------


def test_lance_write_succeeds_through_two_503s(faulty_s3):
    faulty_s3.proxy.fail_next(2)
    lance.write_dataset(_table(0, 10), faulty_s3.uri, storage_options=faulty_s3.storage_options)
    assert faulty_s3.proxy.faults == 2
    assert _read(faulty_s3.uri, faulty_s3.storage_options) == (1, list(range(10)))


def test_lance_write_succeeds_through_two_dropped_connections(faulty_s3):
    faulty_s3.proxy.drop_next(2)
    lance.write_dataset(_table(0, 10), faulty_s3.uri, storage_options=faulty_s3.storage_options)
    assert faulty_s3.proxy.faults == 2
    assert _read(faulty_s3.uri, faulty_s3.storage_options) == (1, list(range(10)))


def test_lance_write_raises_when_every_request_fails_and_keeps_the_old_version(faulty_s3):
    opts, uri = faulty_s3.storage_options, faulty_s3.uri
    lance.write_dataset(_table(0, 10), uri, storage_options=opts)
    faulty_s3.proxy.fail_all()
    start = time.monotonic()
    with pytest.raises(OSError):
        lance.write_dataset(_table(10, 10), uri, mode="append", storage_options=opts)
    assert time.monotonic() - start < 60  # the fast-fail knobs hold: no multi-minute retry
    faulty_s3.proxy.pass_through()
    assert _read(uri, opts) == (1, list(range(10)))


def test_proxy_delay_holds_each_request_back(faulty_s3):
    client = faulty_s3.boto3_client()
    faulty_s3.proxy.delay(0.3)
    start = time.monotonic()
    client.head_bucket(Bucket=faulty_s3.bucket)
    assert time.monotonic() - start >= 0.3
    faulty_s3.proxy.pass_through()
    assert faulty_s3.proxy.faults == 0  # a delay is not counted as a fault


def test_proxy_forwards_signed_requests_and_bodies_faithfully(
    seaweed_bucket, make_fault_proxy, tmp_path
):
    # SeaweedFS checks SigV4 (Host header, path, query, payload hash): any change fails.
    proxy = make_fault_proxy(seaweed_bucket.endpoint)
    opts = {**seaweed_bucket.storage_options, "aws_endpoint": proxy.endpoint}
    lance.write_dataset(_table(0, 10), seaweed_bucket.uri, storage_options=opts)
    assert _read(seaweed_bucket.uri, opts) == (1, list(range(10)))
    fs = seaweed_bucket.filesystem(endpoint_url=proxy.endpoint)
    payload = os.urandom(6 * 1024 * 1024)  # above s3fs's 5 MiB part size: multipart upload
    fs.pipe(f"{seaweed_bucket.bucket}/blob", payload)
    assert fs.cat(f"{seaweed_bucket.bucket}/blob") == payload
    assert proxy.requests > 0 and proxy.faults == 0


# -- fake-gcs-server -------------------------------------------------------------------------


def test_gcsfs_puts_gets_and_removes_files_on_fake_gcs(gcs_bucket, tmp_path):
    fs = gcs_bucket.filesystem()
    src = tmp_path / "adapter.bin"
    src.write_bytes(os.urandom(1024 * 1024))
    remote = f"{gcs_bucket.bucket}/ckpt/0001/adapter.bin"
    fs.put(str(src), remote)
    fs.get(remote, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    fs.rm(f"{gcs_bucket.bucket}/ckpt", recursive=True)
    fs.invalidate_cache()
    assert not fs.exists(remote)


# -- hygiene ---------------------------------------------------------------------------------


def test_servers_listen_on_localhost_only(moto_server, seaweedfs, fake_gcs_server):
    for server in (moto_server, seaweedfs, fake_gcs_server):
        addresses = _listening_addresses(server.pid)
        assert addresses, server
        assert all(a.startswith("127.0.0.1:") for a in addresses), (server, addresses)


@contextlib.contextmanager
def _subreaper():
    """Make this process adopt orphaned descendants, so a test reaps what it orphans
    instead of leaving zombies for an init that may not reap (Linux PR_SET_CHILD_SUBREAPER)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_child_subreaper = 36
    prctl(pr_set_child_subreaper, 1)
    try:
        yield
    finally:
        prctl(pr_set_child_subreaper, 0)


def _reaped_within(pid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for our (adopted) child ``pid`` to die, and reap it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not ours: dead and reaped if /proc has no trace
            return not Path(f"/proc/{pid}").exists()
        time.sleep(0.02)
    return False


def test_kill_reaps_the_whole_process_group(tmp_path):
    with _subreaper():
        proc = ServerProcess(
            [
                sys.executable,
                "-c",
                "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)",
            ],
            tmp_path / "log",
        )
        proc.start()
        time.sleep(0.5)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children
        proc.kill()
        assert not Path(f"/proc/{proc.pid}").exists()  # reaped, not a zombie
        for child in children:
            assert _reaped_within(int(child), seconds=5.0), f"{child} survived its group's kill"


def test_servers_die_with_a_sigkilled_parent(tmp_path):
    # Neither finalizers nor atexit run when pytest itself is SIGKILLed: PDEATHSIG must act.
    code = (
        "import sys, time\n"
        "from tests.servers._process import ServerProcess\n"
        f"p = ServerProcess(['sleep', '60'], {str(tmp_path / 'log')!r})\n"
        "p.start(); print(p.pid, flush=True); time.sleep(60)\n"
    )
    with _subreaper():
        parent = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
        )
        try:
            server_pid = int(parent.stdout.readline())
            # setpriv sets PDEATHSIG, then execs: kill the parent only once that is done.
            cmdline = Path(f"/proc/{server_pid}/cmdline")
            for _ in range(250):
                if cmdline.read_bytes().startswith(b"sleep\0"):
                    break
                time.sleep(0.02)
        finally:
            parent.kill()
            parent.wait()
            parent.stdout.close()
        assert _reaped_within(server_pid, seconds=5.0)
