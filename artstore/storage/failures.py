"""What a failed storage call means, said in one line that names the store and holds no secret.

Lance and fsspec fail with long texts (Rust source paths, XML bodies) or bare exception types;
`storage_error` turns either into a `StorageError` whose message starts with what to do, and
`storage_errors` does it for every Lance call inside it (a commit conflict left after the retries
becomes a `CommitConflictError`). `vanished` tells a file removed by a cleanup (a reader or
writer then tries the latest version again, `VANISHED_RETRIES` times).
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator

from artstore.errors import ArtstoreError, CommitConflictError, StorageError
from artstore.storage.location import LANCE_DEFAULTS, Location

_DENIED = ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId", "ExpiredToken",
           "InvalidToken", "AccessDenied", "403 Forbidden", "401 Unauthorized", "Forbidden")
_UNREACHABLE = re.compile(r"connection refused|error sending request|tcp connect|cannot connect|could not connect|"
                          r"connecterror|connection reset|name or service not known|dns error", re.I)
_UNAVAILABLE = re.compile(r"\b5\d\d\b|SlowDown|InternalError|ServiceUnavailable")
_TIMED_OUT = re.compile(r"timed out|deadline has elapsed|ReadTimeout|ConnectTimeout", re.I)
_BUSY = (errno.EBUSY, errno.EAGAIN, getattr(errno, "EREMOTEIO", errno.EIO))  # s3fs's 503 / 500
_MAX_DETAIL = 600


def _hint(loc: Location, text: str, exc: BaseException) -> str:
    o = loc.storage_options
    if isinstance(exc, PermissionError) or any(s in text for s in _DENIED):
        code = next((s for s in _DENIED if s in text), type(exc).__name__)
        keys = ("google_service_account / google_service_account_key / google_storage_token"
                if loc.scheme == "gs" else "aws_access_key_id / aws_secret_access_key")
        return f"the server refused the credentials ({code}): check {keys} (storage_options or environment)"
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "the bucket does not exist"
    endpoint = o.get("aws_endpoint") or o.get("google_endpoint") or "the default endpoint"
    if isinstance(exc, TimeoutError) or _TIMED_OUT.search(text):
        return (f"the server at {endpoint} did not answer in time "
                f"(timeout={o.get('timeout', LANCE_DEFAULTS['timeout'])})")
    if isinstance(exc, ConnectionError) or _UNREACHABLE.search(text):
        return f"could not reach the server at {endpoint}"
    if _UNAVAILABLE.search(text) or getattr(exc, "errno", None) in _BUSY:
        retries = o.get("client_max_retries", LANCE_DEFAULTS["client_max_retries"])
        window = o.get("client_retry_timeout", LANCE_DEFAULTS["client_retry_timeout"])
        return (f"the server at {endpoint} kept failing after retries (client_max_retries={retries}, "
                f"client_retry_timeout={window}s); nothing was committed by this call")
    return "the storage call failed"


def storage_error(loc: Location, action: str, exc: BaseException) -> StorageError:
    """A StorageError for `action` ("read", "append to", ...) on `loc`, secrets redacted."""
    raw = str(exc) if exc.__cause__ is None else f"{exc} <- {exc.__cause__}"  # s3fs keeps botocore's text there
    text = loc.redact(re.sub(r"\s+", " ", raw).strip()) or type(exc).__name__
    detail = text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + " ..."
    return StorageError(f"{action} {loc.uri} failed: {_hint(loc, text, exc)}. [{type(exc).__name__}: {detail}]")


# A cleanup beside a writer (a short retention window) can remove the version the writer read;
# it then re-reads the latest and tries again, this many times.
VANISHED_RETRIES = 3


@contextlib.contextmanager
def storage_errors(loc: Location, action: str) -> Iterator[None]:
    """Turn Lance/IO errors into StorageError naming the dataset, never a secret."""
    try:
        yield
    except ArtstoreError:  # already says what went wrong (e.g. a ValidationError is a ValueError)
        raise
    except (OSError, RuntimeError, ValueError) as e:
        text = loc.redact(str(e))
        if "conflict" in text.lower() and "retr" in text.lower():
            raise CommitConflictError(f"{action} {loc.uri}: too many concurrent commits; retry. ({text})") from None
        raise storage_error(loc, action, e) from None


def vanished(e: BaseException) -> bool:
    """Whether `e` says a file of the dataset was not found (a cleanup removed what was read)."""
    text = str(e).lower()
    return "not found" in text or "no such file" in text
