"""pytest fixtures for local object-storage servers; load with
``pytest_plugins = ["tests.servers.fixtures"]`` in the top conftest.py.

Servers start on first use (session scope: startup costs seconds), buckets are fresh per
test (function scope). Every server binds 127.0.0.1 on a port chosen at run time and is
killed and reaped when the session ends, failed tests or not.

- ``moto_server`` -> MotoS3Server;  ``s3_bucket`` -> S3Bucket on moto
- ``seaweedfs`` -> SeaweedFS (``kill()``, ``restart()``);  ``seaweed_bucket`` -> S3Bucket on it
- ``make_fault_proxy`` -> ``f(upstream_endpoint) -> FaultProxy`` (started, stopped after)
- ``faulty_s3`` -> FaultyS3Bucket: an S3Bucket on moto through a FaultProxy (``.proxy``)
- ``fake_gcs_server`` -> FakeGcsServer;  ``gcs_bucket`` -> GcsBucket (``.filesystem()``)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

import pytest

from ._s3 import S3Bucket

# Importing fake_gcs sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before gcsfs is imported.
from .fake_gcs import FakeGcsServer, GcsBucket
from .fault_proxy import FaultProxy, FaultyS3Bucket
from .moto_s3 import MotoS3Server
from .seaweedfs import SeaweedFS


@contextmanager
def _running(server):
    """``server`` started, and stopped after, also when its start fails half way (so whatever it
    spawned is still killed)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    with _running(MotoS3Server(tmp_path_factory.mktemp("moto"))) as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoS3Server) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on moto; deleted after the test."""
    bucket = moto_server.create_bucket()
    try:
        yield bucket
    finally:
        moto_server.delete_bucket(bucket.bucket)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with _running(SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))) as server:
        yield server


@pytest.fixture
def seaweed_bucket(seaweedfs: SeaweedFS) -> Iterator[S3Bucket]:
    """A fresh bucket on SeaweedFS (restarted first if an earlier test left it killed)."""
    seaweedfs.ensure_running()
    bucket = seaweedfs.create_bucket()
    try:
        yield bucket
    finally:
        if seaweedfs.alive:
            seaweedfs.delete_bucket(bucket.bucket)


@pytest.fixture
def make_fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """A factory: ``make_fault_proxy("http://127.0.0.1:port")`` -> a started FaultProxy."""
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture
def faulty_s3(s3_bucket: S3Bucket, make_fault_proxy: Callable[[str], FaultProxy]) -> FaultyS3Bucket:
    """``s3_bucket`` seen through a fault proxy (pass-through until ``.proxy`` says otherwise)."""
    proxy = make_fault_proxy(s3_bucket.endpoint)
    return FaultyS3Bucket(**{**asdict(s3_bucket), "endpoint": proxy.endpoint}, proxy=proxy)


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    with _running(FakeGcsServer(tmp_path_factory.mktemp("fake_gcs"))) as server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs_server: FakeGcsServer) -> Iterator[GcsBucket]:
    """A fresh bucket on fake-gcs-server; deleted after the test."""
    bucket = fake_gcs_server.create_bucket()
    try:
        yield bucket
    finally:
        fake_gcs_server.delete_bucket(bucket)
