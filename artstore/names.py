"""Names that become path segments or ids: projects, models, splits, tags, log ids."""

from __future__ import annotations

import re

from artstore.errors import InvalidNameError, ValidationError

_LOG_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]{1,255}")  # always a usable segment (but '.' and '..')
# A tag: a file name everywhere and a Lance ref (no leading or trailing '.', no '..', no '.lock' end)
TAG_NAME = re.compile(r"(?!.*\.\.)(?!.*\.lock$)[A-Za-z0-9_\-](?:[A-Za-z0-9_.\-]{0,126}[A-Za-z0-9_\-])?")


def check_segment(field: str, name: object) -> str:
    """`name` if it is a simple path segment: a non-empty str without '/', '\\', NUL or control
    characters, not '.' or '..', at most 255 bytes. Raises InvalidNameError naming `field`."""
    if isinstance(name, str) and _PLAIN_SEGMENT.fullmatch(name) and name not in {".", ".."}:
        return name  # the common case, checked in one match (listing 500 runs checks 1,000 names)
    if not isinstance(name, str):
        raise InvalidNameError(field, f"must be a string, got {type(name).__name__}")
    if not name or name in {".", ".."}:
        raise InvalidNameError(field, f"{name!r} is not a usable name; use letters, digits, '-', '_', '.'")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidNameError(field, f"{name!r} must not contain '/', '\\', NUL or control characters")
    check_text(field, name, InvalidNameError)
    if len(name.encode()) > 255:
        raise InvalidNameError(field, "is longer than 255 bytes")
    return name


def check_text(field: str, text: str, error: type[ValidationError] = ValidationError) -> str:
    """`text` if it can be stored (encoded as UTF-8: no lone surrogates); else `error` naming `field`."""
    try:
        text.encode()
    except UnicodeEncodeError as e:
        raise error(field, f"{text!r} is not valid Unicode text (a lone surrogate at position {e.start})") from None
    return text


def check_log_id(log_id: object) -> str:
    if not isinstance(log_id, str) or not _LOG_ID.match(log_id):
        raise InvalidNameError("log_id", f"{log_id!r}: use 1-200 characters of letters, digits, '_', '.', ':', '-'")
    return log_id


def sql_quote(value: str) -> str:
    """A string literal for a Lance filter (values are checked names or ids; quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def check_tag(name: object) -> str:
    """`name` if it can name a tag: 1-128 ASCII letters, digits, '_', '-' and '.', not starting or
    ending with '.', without '..', not ending with '.lock' (what a Lance tag accepts, and a file
    name on every storage). Raises InvalidNameError naming the field "tag"."""
    if isinstance(name, str) and TAG_NAME.fullmatch(name):
        return name
    if not isinstance(name, str):
        raise InvalidNameError("tag", f"must be a string, got {type(name).__name__}")
    check_text("tag", name, InvalidNameError)
    raise InvalidNameError("tag", f"{name!r} is not a tag name: use 1-128 ASCII letters, digits, '_', '-' and '.' "
                                  "(not first or last, not twice in a row, no '.lock' ending), e.g. release-1")
