"""What every page's API shares: naming a run (`project/model`) and a point in its past (`as_of`)."""

from __future__ import annotations

from datetime import datetime

from artstore import InvalidNameError, Run, RunNotFoundError, Store, ValidationError


def run_of(store: Store, ref: str) -> Run:
    """`project/model` -> the run; RunNotFoundError when the store holds no such run."""
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise InvalidNameError("run", f"{ref!r}: name a run as PROJECT/MODEL, e.g. email-search/agent-001")
    project, name = ref.split("/")
    run = store.run(project, name)
    if not run.exists():
        raise RunNotFoundError(f"no run {ref} in {store.uri}")
    return run


def as_of(text: str | None) -> int | str | datetime | None:
    """The `as_of` query parameter: empty -> latest; digits -> a version; an ISO time with a zone
    -> that time; anything else -> a tag."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text[:4].isdigit() and "T" in text:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
        if when.tzinfo is None:
            raise ValidationError("as_of", f"{text!r}: give the time with its zone, e.g. 2026-12-06T05:00:00Z")
        return when
    return text
