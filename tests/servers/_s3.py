"""What every S3 fixture yields (`S3Bucket`), and bucket create/delete through boto3."""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

REGION = "us-east-1"

# Lance (object_store) knobs so a broken server fails a test in seconds, not minutes.
# client_retry_timeout is whole seconds; timeout/connect_timeout need a unit ("30s"):
# a bare "30" is rejected with 'failed to parse "30" as Duration'.
LANCE_FAST_FAIL = {
    "client_max_retries": "3",
    "client_retry_timeout": "10",
    "timeout": "30s",
    "connect_timeout": "5s",
}


def new_bucket_name() -> str:
    """A fresh S3-valid bucket name (lowercase, 3-63 characters)."""
    return f"t-{uuid.uuid4().hex[:16]}"


@dataclass
class S3Bucket:
    """A bucket on a local S3 server, with the spellings each client wants.

    ``endpoint`` is the http URL clients talk to (a proxy, for `faulty_s3`), ``bucket`` the
    bucket name, ``prefix`` a key prefix under it (``uri`` is ``s3://bucket/prefix``).
    """

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    prefix: str = "store"
    region: str = REGION

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Lance's `storage_options`, a fresh dict each time (safe to mutate)."""
        return {
            "aws_endpoint": self.endpoint,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_region": self.region,
            "allow_http": "true",  # without it an http endpoint fails with "builder error"
            **LANCE_FAST_FAIL,
        }

    @property
    def s3fs_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `s3fs.S3FileSystem` (timeouts in seconds)."""
        return {
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {
                "connect_timeout": 5,
                "read_timeout": 30,
                "retries": {"max_attempts": 3, "mode": "standard"},
            },
            "skip_instance_cache": True,
        }

    def filesystem(self, **overrides: Any) -> Any:
        """A new `s3fs.S3FileSystem` on this server."""
        import s3fs

        return s3fs.S3FileSystem(**{**self.s3fs_kwargs, **overrides})

    def boto3_client(self) -> Any:
        """A boto3 S3 client on this endpoint."""
        return make_client(self.endpoint, self.access_key_id, self.secret_access_key)


def make_client(endpoint: str, access_key_id: str, secret_access_key: str) -> Any:
    """A boto3 S3 client with short timeouts (seconds) and few retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=REGION,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
    )


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Best effort: delete every object, then the bucket (teardown must not fail a test)."""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception as e:  # a killed server, a test that deleted it itself, ...
        log.debug("could not delete bucket %s: %s", bucket, e)
    with contextlib.suppress(Exception):
        client.close()
