"""ART's trajectory file formats, read and written: trajectory parquet v1 and v2, legacy JSONL/YAML
(ART's `history.jsonl`: `artstore.art.history_file`).

Readers take a file's bytes and the name to blame (`where`) and give artstore records, raising
ImportFormatError naming the file (and line or row) on anything they cannot read. Writers give
the bytes openpipe-art's own readers load.

  parquet v1  openpipe-art 0.5.x before 0.5.2x: 10 flat columns, one row per trajectory; holds no
              exceptions, additional_histories, policy versions, empty groups or Choice details
  parquet v2  openpipe-art 0.5.2x: v1's columns plus `format_version`, `group_json` and
              `trajectory_json` (the full models, repeated per row), schema metadata
              `art.trajectory_parquet.version = 2`; a group without trajectories is one sentinel row
  jsonl       before parquet: one group per line (`trajectories` only)
  yaml        ART 0.3-0.4: a list of groups (`trajectories`, `metadata`)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pydantic

from artstore.errors import ImportFormatError, ValidationError
from artstore.records.trajectory import Choice, History, Trajectory, TrajectoryGroup

TRAJECTORY_SUFFIXES = {"parquet": "parquet", "jsonl": "jsonl", "yaml": "yaml", "yml": "yaml"}
FORMAT_VERSIONS = ("v1", "v2")
_TRAJECTORY_KEYS = {"messages_and_choices", "tools", "additional_histories", "reward", "metrics", "metadata",
                    "logs", "initial_policy_version", "final_policy_version"}
_GROUP_KEYS = {"exceptions", "metadata", "metrics", "logs"}

# What each source format cannot hold (said in the import summary).
CANNOT_HOLD = {
    "parquet v1": "no group exceptions, no additional_histories, no policy versions, no groups without "
                  "trajectories, no Choice details (finish_reason is inferred: tool_calls or stop; logprobs, "
                  "refusal, name lost); tools are read from its `tools` column (ART's own reader drops them)",
    "parquet v2": "",
    "jsonl": "no exceptions, no group metadata, metrics or logs, no logprobs",
    "yaml": "no exceptions, no tools, additional_histories, group metrics or logs, no logprobs",
}


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# -- reading --------------------------------------------------------------------------------------
def json_object(text: Any, where: str) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ImportFormatError(f"{where}: invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ImportFormatError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _reward(value: Any, where: str) -> float:
    if isinstance(value, str) and value in {"NaN", "Infinity", "-Infinity"}:  # pydantic's inf/nan strings
        return float(value.replace("inity", ""))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImportFormatError(f"{where}: reward must be a number, got {value!r}")
    return float(value)


def _trajectory(d: Any, where: str, dropped: Counter) -> Trajectory:
    """A trajectory dict as ART dumps it (v2 JSON, legacy JSONL/YAML) -> Trajectory."""
    if not isinstance(d, dict):
        raise ImportFormatError(f"{where}: a trajectory must be an object, got {type(d).__name__}")
    for k in set(d) - _TRAJECTORY_KEYS:
        if d[k] not in (None, {}, []):
            dropped[k] += 1
    kept = {k: v for k, v in d.items() if k in _TRAJECTORY_KEYS and v is not None}
    kept["reward"] = _reward(d.get("reward", 0.0), where)
    kept.setdefault("messages_and_choices", [])
    try:
        return Trajectory(**kept)
    except (ValidationError, pydantic.ValidationError) as e:
        raise ImportFormatError(f"{where}: not a valid trajectory: {e}") from None


def _group(d: Any, trajectories: list[Trajectory], where: str, dropped: Counter) -> TrajectoryGroup:
    if not isinstance(d, dict):
        raise ImportFormatError(f"{where}: a group must be an object, got {type(d).__name__}")
    for k in set(d) - _GROUP_KEYS - {"trajectories"}:
        dropped[f"group.{k}"] += 1
    try:
        return TrajectoryGroup(trajectories, exceptions=d.get("exceptions") or [], metadata=d.get("metadata") or {},
                               metrics=d.get("metrics") or {}, logs=d.get("logs") or [])
    except (ValidationError, pydantic.ValidationError) as e:
        raise ImportFormatError(f"{where}: not a valid group: {e}") from None


def _v1_message(m: dict[str, Any], where: str) -> dict[str, Any] | Choice:
    tool_calls = json.loads(m["tool_calls"]) if m.get("tool_calls") else None
    if m.get("trainable"):  # ART flattened a Choice: rebuild one (finish_reason is not stored)
        msg = {"role": m.get("role") or "assistant", "content": m.get("content")}
        if tool_calls:
            msg["tool_calls"] = tool_calls
        try:
            return Choice.model_validate({"finish_reason": "tool_calls" if tool_calls else "stop", "index": 0,
                                          "logprobs": None, "message": msg})
        except pydantic.ValidationError as e:
            raise ImportFormatError(f"{where}: trainable message is not a valid Choice: {e}") from None
    out: dict[str, Any] = {"role": m.get("role"), "content": m.get("content")}
    if tool_calls:
        out["tool_calls"] = tool_calls
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _v1_trajectory(row: dict[str, Any], where: str) -> Trajectory:
    try:
        messages = [_v1_message(m, where) for m in row.get("messages") or []]
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{where}: invalid tool_calls JSON ({e})") from None
    tools = json.loads(row["tools"]) if row.get("tools") else None
    try:
        return Trajectory(messages_and_choices=messages, tools=tools, reward=_reward(row.get("reward"), where),
                          metrics=json_object(row.get("metrics"), f"{where} metrics"),
                          metadata=json_object(row.get("metadata"), f"{where} metadata"), logs=row.get("logs") or [])
    except (ValidationError, pydantic.ValidationError) as e:
        raise ImportFormatError(f"{where}: not a valid trajectory: {e}") from None


def read_parquet_groups(data: bytes, where: str, dropped: Counter) -> tuple[list[TrajectoryGroup], str]:
    """An ART trajectory parquet file -> (groups, "parquet v1" | "parquet v2")."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ImportFormatError(f"{where}: not a readable parquet file ({e})") from None
    version = (table.schema.metadata or {}).get(b"art.trajectory_parquet.version")
    if version not in (None, b"2"):
        raise ImportFormatError(f"{where}: unsupported ART trajectory parquet version {version!r}")
    v2 = "format_version" in table.column_names
    if version is not None and not v2:
        raise ImportFormatError(f"{where}: versioned ART parquet without its format_version column")
    missing = {"group_index", "reward", "messages"} - set(table.column_names)
    if missing:
        raise ImportFormatError(f"{where}: not an ART trajectory file (missing columns {sorted(missing)})")
    by_group: dict[int, list[dict[str, Any]]] = {}
    for i, row in enumerate(table.to_pylist()):
        if v2 and row.get("format_version") != 2:
            raise ImportFormatError(f"{where} row {i}: unsupported format_version {row.get('format_version')!r}")
        if not v2 and row.get("reward") is None and row.get("messages") is None:
            continue  # ART's v1 reader skips such rows too
        gi = row.get("group_index")
        if not isinstance(gi, int):
            raise ImportFormatError(f"{where} row {i}: group_index must be an integer, got {gi!r}")
        by_group.setdefault(gi, []).append({**row, "_row": i})
    groups = []
    for gi in sorted(by_group):
        rows = by_group[gi]
        gw = f"{where} group {gi}"
        trajectories = []
        for row in sorted(rows, key=lambda r: (r.get("trajectory_index") is None, r.get("trajectory_index") or 0)):
            rw = f"{where} row {row['_row']}"
            if v2 and row.get("trajectory_json") is not None:
                trajectories.append(_trajectory(json_object(row["trajectory_json"], rw), rw, dropped))
            elif not v2 or row.get("trajectory_index") is not None:
                trajectories.append(_v1_trajectory(row, rw))
        if v2:
            indexes = sorted(r["trajectory_index"] for r in rows if r.get("trajectory_index") is not None)
            if indexes != list(range(len(indexes))):
                raise ImportFormatError(f"{gw}: duplicate or missing trajectory_index {indexes}")
        payloads = {r.get("group_json") for r in rows} if v2 else {None}
        if len(payloads) != 1:
            raise ImportFormatError(f"{gw}: rows disagree on group_json")
        payload = payloads.pop()
        if payload is not None:
            group = _group(json_object(payload, gw), trajectories, gw, dropped)
        else:
            first = rows[0]
            group = _group({"metadata": json_object(first.get("group_metadata"), f"{gw} group_metadata"),
                            "metrics": json_object(first.get("group_metrics"), f"{gw} group_metrics"),
                            "logs": first.get("group_logs") or []}, trajectories, gw, dropped)
        groups.append(group)
    return groups, "parquet v2" if v2 else "parquet v1"


def read_legacy_groups(data: bytes, kind: str, where: str, dropped: Counter) -> list[TrajectoryGroup]:
    """A legacy JSONL (one group per line) or YAML (a list of groups) trajectory file -> groups."""
    text = data.decode("utf-8", errors="strict")
    if kind == "jsonl":
        raw = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    raw.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ImportFormatError(f"{where}:{n}: invalid JSON ({e})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ImportFormatError(f"{where}: reading ART's YAML trajectories needs PyYAML (pip install pyyaml)") from None
        try:
            raw = yaml.safe_load(text) or []
        except yaml.YAMLError as e:
            raise ImportFormatError(f"{where}: invalid YAML ({e})") from None
    if not isinstance(raw, list):
        raise ImportFormatError(f"{where}: expected a list of trajectory groups")
    groups = []
    for gi, g in enumerate(raw):
        gw = f"{where} group {gi}"
        if not isinstance(g, dict) or not isinstance(g.get("trajectories", []), list):
            raise ImportFormatError(f"{gw}: expected an object with a `trajectories` list")
        trajs = [_trajectory(t, f"{gw} trajectory {ti}", dropped) for ti, t in enumerate(g.get("trajectories", []))]
        groups.append(_group(g, trajs, gw, dropped))
    return groups


# -- writing parquet ------------------------------------------------------------------------------
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.string()),
                      ("tool_call_id", pa.string()), ("trainable", pa.bool_())])
_V1_FIELDS = [("group_index", pa.int64()), ("group_metadata", pa.string()), ("group_metrics", pa.string()),
              ("group_logs", pa.list_(pa.string())), ("reward", pa.float64()), ("metrics", pa.string()),
              ("metadata", pa.string()), ("tools", pa.string()), ("logs", pa.list_(pa.string())),
              ("messages", pa.list_(_MESSAGE))]
V1_SCHEMA = pa.schema(_V1_FIELDS)
V2_SCHEMA = pa.schema(
    [("format_version", pa.int16()), ("group_index", pa.int64()), ("trajectory_index", pa.int64()),
     ("group_json", pa.large_string()), ("trajectory_json", pa.large_string()), *_V1_FIELDS[1:]],
    metadata={b"art.trajectory_parquet.version": b"2"},
)


def _compact(value: Any) -> str:  # 0.5.2x spells JSON compactly
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_number(x: float) -> float | str:  # pydantic's spelling of non-finite floats in JSON
    return x if math.isfinite(x) else ("NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity"))


def _item_json(item: Any) -> dict[str, Any]:
    return item.model_dump(mode="json") if isinstance(item, Choice) else item


def _history_json(h: History) -> dict[str, Any]:
    return {"tools": h.tools, "messages_and_choices": [_item_json(m) for m in h.messages_and_choices]}


def trajectory_json(t: Trajectory) -> dict[str, Any]:
    """A trajectory as 0.5.2x dumps it into `trajectory_json`."""
    data: dict[str, Any] = {"tools": t.tools, "reward": _json_number(t.reward)}
    if t.initial_policy_version is not None:
        data["initial_policy_version"] = t.initial_policy_version
    if t.final_policy_version is not None:
        data["final_policy_version"] = t.final_policy_version
    data |= {"metrics": t.metrics, "metadata": t.metadata, "logs": t.logs}
    if t.messages_and_choices:
        data["messages_and_choices"] = [_item_json(m) for m in t.messages_and_choices]
    if t.additional_histories:
        data["additional_histories"] = [_history_json(h) for h in t.additional_histories]
    return data


def group_json(g: TrajectoryGroup) -> dict[str, Any]:
    """A group without its trajectories, as 0.5.2x dumps it into `group_json`."""
    data: dict[str, Any] = {"exceptions": [e.model_dump() for e in g.exceptions]} if g.exceptions else {}
    return data | {"metadata": g.metadata, "metrics": g.metrics, "logs": g.logs}


def _flat_message(item: Any, lost: Counter) -> dict[str, Any] | None:
    """A message or Choice in the flat `messages` struct; None when its content is not text."""
    if isinstance(item, Choice):
        msg = item.message.model_dump(mode="json", exclude_unset=True)
        if item.finish_reason not in ("stop", "tool_calls") or item.logprobs is not None or msg.get("refusal"):
            lost["Choice details (finish_reason, logprobs, refusal)"] += 1
    else:
        msg = item
    if msg.get("content") is not None and not isinstance(msg["content"], str):
        return None
    extra = set(msg) - {"role", "content", "tool_calls", "tool_call_id", "refusal", "annotations", "audio",
                        "function_call"}
    if extra:
        lost[f"message fields {sorted(extra)}"] += 1
    return {"role": msg.get("role"), "content": msg.get("content"),
            "tool_calls": json.dumps(msg["tool_calls"]) if msg.get("tool_calls") else None,
            "tool_call_id": None if isinstance(item, Choice) else msg.get("tool_call_id"),
            "trainable": isinstance(item, Choice)}


def _flat_messages(t: Trajectory, lost: Counter) -> list[dict[str, Any]] | None:
    flat = [_flat_message(m, lost) for m in t.messages_and_choices]
    if any(m is None for m in flat):
        lost["messages with multi-part content (v1 holds text only)"] += 1
        return None
    return flat


def write_parquet_groups(groups: list[TrajectoryGroup], version: str) -> tuple[bytes, Counter]:
    """Groups as one ART trajectory parquet file (zstd) of format `version` ("v1" or "v2"), and
    what that format could not hold (what -> how many; always empty for v2)."""
    if version not in FORMAT_VERSIONS:
        raise ValidationError("format", f"must be one of {FORMAT_VERSIONS}, got {version!r}")
    v1 = version == "v1"
    dumps = json.dumps if v1 else _compact
    lost: Counter = Counter()
    rows: list[dict[str, Any]] = []
    for gi, g in enumerate(groups):
        common: dict[str, Any] = {
            "group_index": gi, "group_metadata": dumps(g.metadata) if g.metadata else None,
            "group_metrics": dumps(g.metrics) if g.metrics else None, "group_logs": g.logs or None}
        if v1:
            lost["group exceptions"] += len(g.exceptions)
            lost["groups without trajectories"] += not g.trajectories
        else:
            common |= {"format_version": 2, "group_json": _compact(group_json(g))}
            if not g.trajectories:
                rows.append({**common, "trajectory_index": None, "trajectory_json": None})
        for ti, t in enumerate(g.trajectories):
            row = {**common, "reward": t.reward, "metrics": dumps(t.metrics) if t.metrics else None,
                   "metadata": dumps(t.metadata) if t.metadata else None,
                   "tools": dumps(t.tools) if t.tools else None, "logs": t.logs or None,
                   "messages": _flat_messages(t, lost if v1 else Counter())}
            if v1:
                lost["additional_histories"] += len(t.additional_histories)
                lost["policy versions"] += (t.initial_policy_version, t.final_policy_version) != (None, None)
            else:
                row |= {"trajectory_index": ti, "trajectory_json": _compact(trajectory_json(t))}
            rows.append(row)
    table = pa.Table.from_pylist(rows, schema=V1_SCHEMA if v1 else V2_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes(), +lost
