"""Secrets never survive in a StorageError's chain or a logged traceback (issue 16, item 8)."""

from __future__ import annotations

import logging
import traceback

import pytest

from artstore.errors import StorageError
from artstore.storage import Location
from artstore.storage.failures import storage_errors

TOKEN = "SeSsIoN-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def loc():
    return Location.parse("s3://bucket/store", {"aws_access_key_id": "k", "aws_secret_access_key": "s" * 8,
                                                 "aws_session_token": TOKEN, "aws_endpoint": "http://127.0.0.1:9"})


def _chain(e: BaseException | None):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def test_a_storage_error_keeps_no_chained_exception_holding_the_secret(loc):
    with pytest.raises(StorageError) as caught:
        with storage_errors(loc, "read"):
            raise OSError(f"request to http://127.0.0.1:9/?X-Amz-Security-Token={TOKEN} failed")
    err = caught.value
    assert err.__context__ is None and err.__cause__ is None
    for link in _chain(err):
        assert TOKEN not in repr(link) and TOKEN not in str(link)
    assert TOKEN not in "".join(traceback.format_exception(err))
    assert "***" in str(err)


def test_a_debug_log_with_a_traceback_is_redacted(loc, caplog):
    caplog.set_level(logging.DEBUG, logger="botocore")
    try:
        raise ConnectionError(f"header x-amz-security-token: {TOKEN}")
    except ConnectionError:
        logging.getLogger("botocore.endpoint").debug("request failed", exc_info=True)
    assert "request failed" in caplog.text and "ConnectionError" in caplog.text
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in logging.Formatter().format(record)
