"""moto's S3 server as a subprocess on 127.0.0.1: in memory, honours `If-None-Match`,
accepts any credentials. The default S3 for tests (starts in about 1 s)."""

from __future__ import annotations

import logging
import sys
import urllib.request
from pathlib import Path

from ._process import LOCALHOST, ServerProcess, free_ports, wait_until
from ._s3 import S3Bucket, empty_and_delete_bucket, make_client, new_bucket_name

log = logging.getLogger(__name__)

# moto checks no signature; any non-empty pair works.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


class MotoS3Server:
    """A `moto_server` process; ``start()`` blocks until it answers HTTP."""

    def __init__(self, log_dir: Path) -> None:
        (self.port,) = free_ports(1)
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        self.startup_s: float | None = None
        self._proc = ServerProcess(
            [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)],
            Path(log_dir) / "moto_server.log",
        )

    def start(self, timeout: float = 120.0) -> None:  # a loaded machine: tens of seconds of imports
        """Start and wait until ``GET /`` answers; ``timeout`` in seconds."""
        self._proc.start()
        self.startup_s = wait_until(self._answers, timeout, "moto_server", self._proc)
        log.info("moto_server on %s ready in %.2f s", self.endpoint, self.startup_s)

    def _answers(self) -> bool:
        with urllib.request.urlopen(self.endpoint + "/", timeout=1) as r:
            return r.status == 200

    def stop(self) -> None:
        self._proc.stop(grace=3.0)

    @property
    def alive(self) -> bool:
        return self._proc.alive

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def client(self):
        return make_client(self.endpoint, ACCESS_KEY_ID, SECRET_ACCESS_KEY)

    def create_bucket(self, name: str | None = None) -> S3Bucket:
        """Create a fresh bucket and describe it (endpoint: this server)."""
        bucket = S3Bucket(
            self.endpoint, name or new_bucket_name(), ACCESS_KEY_ID, SECRET_ACCESS_KEY
        )
        self.client().create_bucket(Bucket=bucket.bucket)
        return bucket

    def delete_bucket(self, name: str) -> None:
        """Best effort: free the bucket's memory in the server."""
        empty_and_delete_bucket(self.client(), name)
