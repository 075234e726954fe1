"""A run's stored configuration: `configs.lance`, an append-only log of Model(config=...) and of
each TrainConfig a train() call used (schemas/configs.json).

A configuration is appended only when it differs from the last one stored for its source, before
the log call that first uses it; one append is one Lance commit (all or nothing), so a killed
writer leaves either the row or nothing, and racing writers at worst store an equal row twice.
Read as of a run version (a version or tag of its logs table, or a time), it is the last row per
source recorded before that version was committed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pyarrow as pa
import pydantic_core

from artstore.errors import ValidationError
from artstore.schema import arrow_schema
from artstore.storage import Location, scans, writes

SOURCES = ("model", "train")


def as_json(config: Any) -> str:
    """`config` (a pydantic model, dataclass, dict, ...) as canonical JSON text (sorted keys);
    values JSON cannot hold are written as their text."""
    value = pydantic_core.to_jsonable_python(config, fallback=str, serialize_unknown=True, inf_nan_mode="null")
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


class ConfigLog:
    """The run's `configs.lance`."""

    def __init__(self, run_location: Location):
        self.location = run_location.child("configs.lance")

    def rows(self, before: datetime | None = None) -> list[dict[str, Any]]:
        """Every stored configuration (recorded before `before`, when given), oldest first."""
        found = scans.scan(self.location)
        if found is None:
            return []
        rows = sorted(found.to_pylist(), key=lambda r: r["recorded_at"])  # stable: ties keep commit order
        return [r for r in rows if before is None or r["recorded_at"] <= before]

    def latest(self, before: datetime | None = None) -> dict[str, Any]:
        """{source: the last configuration stored (decoded JSON)} for each source stored."""
        out: dict[str, Any] = {}
        for row in self.rows(before):
            out[row["source"]] = json.loads(row["config"])
        return {s: out[s] for s in SOURCES if s in out}

    def record(self, source: str, config_json: str, step: int | None, known: str | None = None) -> bool:
        """Append `config_json` for `source` unless it equals the last stored one (`known`: the
        caller's memory of that, to skip the read). Returns whether a row was appended."""
        if source not in SOURCES:
            raise ValidationError("source", f"{source!r}: use one of {', '.join(SOURCES)}")
        last = known
        if last is None:
            stored = [r["config"] for r in self.rows() if r["source"] == source]
            last = stored[-1] if stored else None
        if last == config_json:
            return False
        row = {"config_id": uuid.uuid4().hex, "source": source, "step": step, "config": config_json,
               "recorded_at": writes.now_utc()}
        writes.append(self.location, pa.Table.from_pylist([row], schema=arrow_schema("configs")), f"config {source}")
        return True
