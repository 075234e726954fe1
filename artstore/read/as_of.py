"""`as_of`: which past state of a run a read sees (a version of its logs table, a tag, or a time)."""

from __future__ import annotations

from datetime import datetime

from artstore.errors import ValidationError
from artstore.names import check_text

AsOf = int | str | datetime | None
MAX_VERSION = 2**63  # Lance's versions are unsigned 64-bit; a version past this cannot exist


def as_of_args(as_of: AsOf) -> tuple[int | str | None, datetime | None]:
    if as_of is None:
        return None, None
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise ValidationError("as_of", "datetime must be timezone-aware (UTC)")
        return None, as_of
    if isinstance(as_of, bool) or not isinstance(as_of, (int, str)):
        raise ValidationError("as_of", f"must be a version number, a tag or a datetime, got {type(as_of).__name__}")
    if isinstance(as_of, int) and not 0 <= as_of < MAX_VERSION:
        raise ValidationError("as_of", f"a version number (Run.versions() lists them), got {as_of}")
    if isinstance(as_of, str):
        check_text("as_of", as_of)
    return as_of, None
