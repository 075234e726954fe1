"""A run's persistent state: a JSON object kept in `state.lance`, safe with several writers.

Each change commits a whole snapshot as row `seq + 1` of the snapshot it read, through Lance's
unique-key insert: when another writer committed that seq first, nothing is written and the
change is recomputed on the newer snapshot (optimistic concurrency; no update is lost, unlike
ART's state.json, which concurrent writers corrupt). The current state is the highest seq.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import CommitConflictError, ValidationError
from artstore.log.commit import DEFAULT_RETENTION
from artstore.log.inline_upkeep import maintain
from artstore.schema import arrow_schema
from artstore.storage import Location, scans, writes

TABLE = "state.lance"
MAX_ATTEMPTS = 200  # optimistic retries before giving up (each loses only to a committed change)


def read(run: Location) -> tuple[int, dict[str, Any] | None]:
    """(the current snapshot's seq, 0 when none; the state, None when never written)."""
    loc = run.child(TABLE)
    seqs = scans.scan(loc, columns=["seq"])
    if seqs is None or seqs.num_rows == 0:
        return 0, None
    top = pc.max(seqs["seq"]).as_py()
    row = scans.scan(loc, columns=["state"], filter=f"seq = {top}")
    return top, json.loads(row["state"][0].as_py())


def update(run: Location, change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
           retention: timedelta = DEFAULT_RETENTION) -> dict[str, Any] | None:
    """Commit `change(current state)` as the new state and return it; `change` may run more than
    once (on a newer state each time another writer got in first), so it must be pure. When it
    returns the state unchanged (or None), nothing is written."""
    loc = run.child(TABLE)
    for _ in range(MAX_ATTEMPTS):
        seq, current = read(run)
        new = change(None if current is None else json.loads(json.dumps(current)))
        if new is None or new == current:
            return current
        row = pa.Table.from_pylist([{"seq": seq + 1, "state": dumps(new), "recorded_at": writes.now_utc()}],
                                   schema=arrow_schema("state"))
        inserted, version = writes.insert_unique(loc, row, "seq")
        if inserted:
            maintain(run, {"state": version}, retention)  # one fragment per change: compact as logs do
            return new
    raise CommitConflictError(f"state of {run.uri}: {MAX_ATTEMPTS} concurrent changes won before this one; retry")


def dumps(state: Any) -> str:
    """The state as JSON; ValidationError when it is not a JSON object of JSON values."""
    if not isinstance(state, dict):
        raise ValidationError("state", f"must be a dict, got {type(state).__name__}")
    try:
        return json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError("state", f"must hold only JSON values: {e}") from None


def deep_merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """`base` with `updates` merged in: nested dicts merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
