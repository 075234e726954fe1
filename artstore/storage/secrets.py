"""Secret values of storage options, kept out of logs.

Every `Location` registers its secrets here when parsed. botocore, at DEBUG level, logs each
request's headers and canonical request, session token included; so once a secret is registered,
the log records of the storage libraries (and artstore's own) are redacted as they are made: the
secret becomes '***' before any handler sees it. Records below a logger's level are never made,
so this costs nothing unless DEBUG logging is on. Lance logs from Rust (LANCE_LOG) bypass Python
logging; keep LANCE_LOG at info or above where credentials matter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

LIBRARIES = frozenset({"botocore", "aiobotocore", "boto3", "s3fs", "gcsfs", "fsspec", "urllib3", "aiohttp",
                       "google", "requests", "artstore"})
_MIN_LENGTH = 4  # shorter values would blank ordinary words in every record
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register(values: Iterable[str]) -> None:
    """Remember secret values so that log records never show them."""
    new = {v for v in values if v and len(v) >= _MIN_LENGTH}
    if new - _secrets:
        with _lock:
            _secrets.update(new)
        _install()


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if record.name.split(".", 1)[0] in LIBRARIES:
                try:
                    text = record.getMessage()
                except Exception:  # noqa: BLE001 - a broken record is the logger's business
                    return record
                clean = redact(text)
                if clean != text:
                    record.msg, record.args = clean, ()
                if record.exc_info or record.stack_info:  # botocore logs tracebacks with exc_info
                    _redact_traceback(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def _redact_traceback(record: logging.LogRecord) -> None:
    """Format the record's traceback now, redacted, and drop the exception objects (their
    messages and frames may hold a secret): handlers print `exc_text` as it is."""
    if record.exc_info:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_text, record.exc_info = redact(text), None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
