"""The model's persistent state: user keys (ART's read_state/merge_state) and the metrics
builder's running sums, kept under `_metrics_builder_state` as ART 0.5.23 keeps them.

The table and its concurrency live in `artstore.log.state`. The running sums are stored as
deltas (each log adds what its step added, on whatever snapshot is current), so several writers
logging to one run end with the exact totals, where ART's last writer would win.
"""

from __future__ import annotations

from typing import Any

from artstore.errors import ValidationError
from artstore.log.state import deep_merge, dumps, read, update
from artstore.records.metrics_builder import STATE_KEY, MetricsBuilder

__all__ = ["deep_merge", "dumps", "load_builder", "merge_immutable", "read", "store_builder_delta", "update"]

_RATIOS = frozenset({"data/cum/unused_and_dummy_ratio"})  # set, not summed


def load_builder(builder: MetricsBuilder, state: dict[str, Any]) -> bool:
    """Put the stored running sums into `builder` (its pending step values stay). Returns
    whether the state holds builder sums at all."""
    stored = state.get(STATE_KEY)
    sums = stored if isinstance(stored, dict) else {}
    builder.load_sums(sums)
    return isinstance(stored, dict)


def store_builder_delta(run: Any, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Add to the stored sums what one log added (`after` minus `before` builder state dicts)."""
    old, new = before["cum_state"], after["cum_state"]
    delta = {k: v - old.get(k, 0.0) for k, v in new.items() if k not in _RATIOS and v != old.get(k)}
    ratios = {k: v for k, v in new.items() if k in _RATIOS}
    ids = set(after["unique_scenario_ids"]) - set(before["unique_scenario_ids"])

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        current = current or {}
        stored = current.get(STATE_KEY) if isinstance(current.get(STATE_KEY), dict) else {}
        cum = dict(stored.get("cum_state") or {})
        for k, d in delta.items():
            cum[k] = cum.get(k, 0.0) + d
        cum.update(ratios)
        unique = sorted({*(stored.get("unique_scenario_ids") or []), *ids})
        return {**current, STATE_KEY: {"cum_state": cum, "unique_scenario_ids": unique}}

    update(run, change)


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
