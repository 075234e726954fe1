"""Sizes in bytes, written and read one way everywhere (pydantic's ByteSize).

Written: powers of 1024 with IEC units (`1.5KiB`, `976.6KiB`, `5.5GiB`), in every command and
message. Read: `50GB` (powers of 1000), `1.5GiB` (powers of 1024) or a plain number of bytes.
"""

from __future__ import annotations

import functools

import pydantic

from artstore.errors import ValidationError


@functools.cache
def _bytes() -> pydantic.TypeAdapter[pydantic.ByteSize]:
    return pydantic.TypeAdapter(pydantic.ByteSize)  # built on first parse (~15-130 ms): showing a size needs none


def format_size(n: int | None) -> str:
    """Bytes as text with IEC units (1024-based): 123B, 1.5KiB, 5.5GiB; '?' when unknown."""
    if n is None:
        return "?"
    return ("-" if n < 0 else "") + pydantic.ByteSize(abs(int(n))).human_readable()


def parse_size(text: str, field: str = "max_size") -> int:
    """'50GB' (1000-based), '1.5GiB' (1024-based), '1000' -> bytes; ValidationError naming `field`."""
    try:
        return int(_bytes().validate_python(text))
    except pydantic.ValidationError:
        raise ValidationError(field, f"{text!r}: use a number of bytes with an optional unit, e.g. 50GB "
                                     "or 1.5GiB") from None
