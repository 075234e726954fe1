"""ART's `history.jsonl`, read and written: one JSON object per log() call, metrics plus `step`
and `recorded_at` (naive ISO time, read and written as UTC). Trajectory files:
`artstore.art.format`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from artstore.art.format import json_object, sha256
from artstore.art.legacy_names import current_metric_name
from artstore.errors import ImportFormatError


@dataclass
class HistoryRow:
    index: int
    step: int
    recorded_at: datetime | None
    metrics: dict[str, float]
    digest: str


def _naive_as_utc(text: Any, where: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        raise ImportFormatError(f"{where}: recorded_at {text!r} is not an ISO time") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def read_history(data: bytes, where: str) -> list[HistoryRow]:
    """ART's history.jsonl -> one row per line (blank lines skipped). A row without
    `training_step` was written before openpipe-art 0.5.23: its names are mapped onto 0.5.23's
    (`current_metric_name`), so a run imported from 0.5.9 and continued is one series."""
    rows = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"{where}: not UTF-8 text ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        obj = json_object(line, f"{where}:{n}")
        step = obj.pop("step", None)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ImportFormatError(f"{where}:{n}: `step` must be a non-negative integer, got {step!r}")
        recorded_at = _naive_as_utc(obj.pop("recorded_at", None), f"{where}:{n}")
        metrics = {}
        for k, v in obj.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = float(v)
            if not isinstance(v, (int, float)) or not k:
                raise ImportFormatError(f"{where}:{n}: metric {k!r} is not a number: {v!r}")
            if not math.isnan(v):
                metrics[k] = float(v)
        if "training_step" not in metrics:
            metrics = {current_metric_name(k): v for k, v in metrics.items()}
        rows.append(HistoryRow(len(rows), step, recorded_at, metrics, sha256(line)))
    return rows


def history_line(metrics: dict[str, float], step: int, recorded_at: datetime) -> str:
    """One history.jsonl line as ART writes it: metrics, then `step` and `recorded_at` (naive ISO,
    the UTC clock reading). An integral `training_step` is written as an int, as ART does."""
    row: dict[str, Any] = {k: int(v) if k == "training_step" and float(v).is_integer() else v
                           for k, v in metrics.items()}
    at = recorded_at.astimezone(UTC).replace(tzinfo=None) if recorded_at.tzinfo else recorded_at
    return json.dumps(row | {"step": step, "recorded_at": at.isoformat()})
