"""The model's persistent state: user keys (ART's read_state/merge_state) and the metrics
builder's running sums, under `_metrics_builder_state` as ART 0.5.23 keeps them.

The table and its concurrency live in `artstore.log.state`, the running sums in
`artstore.log.sums`: each log carries what it added to them in its own journal row, so a log is
one commit and several writers logging to one run end with the exact totals (ART's last writer
would win). `read` and `update` show and change the state with the sums brought up to date.
"""

from __future__ import annotations

from typing import Any

from artstore.errors import ValidationError
from artstore.log.state import deep_merge, dumps
from artstore.log.sums import read, update
from artstore.records.metrics_builder import STATE_KEY

__all__ = ["STATE_KEY", "deep_merge", "dumps", "merge_immutable", "read", "update"]


def merge_immutable(existing: dict[str, Any], updates: dict[str, Any], path: str = "") -> dict[str, Any]:
    """`existing` with new keys of `updates` added (nested dicts merged); a key already set to a
    different value raises ValidationError (wandb config is immutable once set)."""
    merged = dict(existing)
    for key, value in updates.items():
        where = f"{path}.{key}" if path else key
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge_immutable(merged[key], value, where)
        elif merged[key] != value:
            raise ValidationError(where, f"wandb config is immutable once set: already {merged[key]!r}, got {value!r}")
    return merged
