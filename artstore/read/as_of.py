"""`as_of`: which past state of a run a read sees (a version of its logs table, a tag, or a time).

A tag reads the point it names (`artstore.storage.tags`), whether or not Lance still keeps that
version; a time, the newest version committed at or before it (`version_map.version_at`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from artstore.errors import RunNotFoundError, ValidationError
from artstore.names import check_text

if TYPE_CHECKING:  # the facade calls this service, never the other way
    from artstore.read.store import Store

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


def check_as_of(store: Store, as_of: Any, projects: list[str] | None) -> Any:
    """Check a store-wide `as_of` (Store.sql, Store.snapshot): one spec for every run, or
    {"project/model": spec} naming runs that exist (a spec may be {table: version})."""
    if not isinstance(as_of, Mapping):
        as_of_args(as_of)  # checked now, not when (or whether) a view is scanned
        return as_of
    out = {}
    for key, spec in as_of.items():
        if not isinstance(key, str) or key.count("/") != 1:
            raise ValidationError("as_of", f"name runs as 'project/model', got {key!r}")
        project, model = key.split("/")
        if (projects is not None and project not in projects) or not store.run(project, model).exists():
            raise RunNotFoundError(f"as_of names {key!r}, which is not a run of this store (or of `projects`)")
        if isinstance(spec, Mapping):
            bad = [t for t, v in spec.items() if not isinstance(v, int) or isinstance(v, bool)
                   or not 0 <= v < MAX_VERSION]
            if bad:
                raise ValidationError(f"as_of[{key!r}]", f"table versions must be version numbers (ints), got {bad}")
        else:
            try:
                as_of_args(spec)
            except ValidationError as e:
                raise ValidationError(f"as_of[{key!r}]", e.problem) from None
        out[key] = spec
    return out
