"""Trajectories and groups <-> Arrow rows of the `trajectories` and `groups` tables.

Typed columns hold what people query (role, content, tool calls, reward, metrics); each message
also keeps `raw`, the item as given minus its string content, so the round trip is exact.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pydantic

from artstore.errors import ValidationError
from artstore.records import (
    Choice,
    History,
    PydanticException,
    Trajectory,
    TrajectoryGroup,
    field_path,
)
from artstore.schema import arrow_schema

_MAX_EXACT_INT = 2**53  # largest integer a float64 metric holds exactly
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects: a step of 512
    trajectories makes ~100k dicts and lists, and collections of a large heap triggered by them
    tripled the time of a read (measured: benchmarks/log_hot_path.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _text_of(content: Any) -> str | None:
    if isinstance(content, str) or content is None:
        return content
    if isinstance(content, list):  # multi-part: the text parts, for search
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return None


def encode_message(item: dict[str, Any] | Choice) -> dict[str, Any]:
    """One message or Choice as a row of the message struct."""
    is_choice = isinstance(item, Choice)
    raw = item.model_dump(mode="json", exclude_unset=True) if is_choice else dict(item)
    msg = raw.get("message", {}) if is_choice else raw
    if is_choice:
        raw["message"] = msg = dict(msg)
    content = msg.get("content")
    if isinstance(content, str):
        del msg["content"]
    tool_calls = [
        {
            "id": c.get("id"),
            "type": c.get("type"),
            "name": (c.get("function") or {}).get("name"),
            "arguments": (c.get("function") or {}).get("arguments"),
        }
        for c in (msg.get("tool_calls") or [])
        if isinstance(c, dict)
    ]
    logprobs = None
    if is_choice and raw.get("logprobs") and raw["logprobs"].get("content"):
        logprobs = [lp["logprob"] for lp in raw["logprobs"]["content"]]
    return {
        "role": msg.get("role"),
        "content": _text_of(content),
        "content_parts": _dumps(content) if isinstance(content, list) else None,
        "name": msg.get("name") if isinstance(msg.get("name"), str) else None,
        "tool_calls": tool_calls or None,
        "tool_call_id": msg.get("tool_call_id") if isinstance(msg.get("tool_call_id"), str) else None,
        "refusal": msg.get("refusal") if isinstance(msg.get("refusal"), str) else None,
        "trainable": is_choice,
        "is_choice": is_choice,
        "finish_reason": raw.get("finish_reason") if is_choice else None,
        "logprobs": logprobs,
        "raw": _dumps(raw),
    }


def decode_message(row: Mapping[str, Any]) -> dict[str, Any] | Choice:
    """Inverse of `encode_message`."""
    raw = json.loads(row["raw"])
    if row["is_choice"]:
        msg = raw.setdefault("message", {})
        if "content" not in msg and row["content"] is not None:
            msg["content"] = row["content"]
        return Choice.model_validate(raw)
    if "content" not in raw and row["content"] is not None:
        raw["content"] = row["content"]
    return raw


def _metric_columns(metrics: Mapping[str, float | int | bool], where: str) -> tuple[list, str | None]:
    kinds = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            kinds[k] = "bool"
        elif isinstance(v, int):
            if abs(v) > _MAX_EXACT_INT:
                raise ValidationError(f"{where}.metrics[{k!r}]", f"integer {v} is too large to store exactly")
            kinds[k] = "int"
    return [(k, float(v)) for k, v in metrics.items()], (_dumps(kinds) if kinds else None)


def _metric_values(pairs: list[tuple[str, float]] | None, kinds_json: str | None) -> dict[str, Any]:
    kinds = json.loads(kinds_json) if kinds_json else {}
    cast = {"bool": bool, "int": int}
    return {k: cast[kinds[k]](v) if k in kinds else v for k, v in (pairs or [])}


def _encode_history(h: History) -> dict[str, Any]:
    return {
        "messages": [encode_message(m) for m in h.messages_and_choices],
        "tools": None if h.tools is None else _dumps(h.tools),
    }


def encode_groups(
    groups: Sequence[TrajectoryGroup], *, log_id: str, write_id: str, split: str, step: int, recorded_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """The `trajectories` and `groups` rows of one log call."""
    base = {"log_id": log_id, "write_id": write_id, "split": split, "step": step, "recorded_at": recorded_at}
    with _gc_paused():
        traj_rows, group_rows = _rows(groups, base, log_id)
        try:
            return (
                pa.Table.from_pylist(traj_rows, schema=arrow_schema("trajectories")),
                pa.Table.from_pylist(group_rows, schema=arrow_schema("groups")),
            )
        except (pa.ArrowException, UnicodeError) as e:  # the only such input: text that is not UTF-8
            raise _not_utf8(groups, e) from None


def _not_utf8(groups: Sequence[TrajectoryGroup], error: Exception) -> ValidationError:
    """A ValidationError naming the first string of `groups` that UTF-8 cannot encode (a lone
    surrogate, e.g. from a bad decode): Arrow strings are UTF-8. Only on the error path."""

    def find(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                return where
            return None
        if isinstance(value, pydantic.BaseModel):
            value = {**value.__dict__, **(value.__pydantic_extra__ or {})}
        if isinstance(value, Mapping):
            items = [(field_path(where, str(k)), v) for k, v in value.items()]
            items += [(where, k) for k in value]  # the keys themselves
        elif isinstance(value, (list, tuple)):
            items = [(field_path(where, i), v) for i, v in enumerate(value)]
        else:
            return None
        return next((found for path, v in items if (found := find(v, path)) is not None), None)

    for gi, g in enumerate(groups):
        where = find(g, f"groups[{gi}]")
        if where is not None:
            return ValidationError(where, "is not valid UTF-8 text (a lone surrogate?); it cannot be stored")
    return ValidationError("trajectories", f"cannot be stored: {error}")


def _rows(groups: Sequence[TrajectoryGroup], base: dict[str, Any], log_id: str) -> tuple[list, list]:
    traj_rows, group_rows = [], []
    for gi, g in enumerate(groups):
        group_id = f"{log_id}:{gi}"
        gm, gk = _metric_columns(g.metrics, f"groups[{gi}]")
        group_rows.append({
            **base, "group_id": group_id, "group_index": gi, "num_trajectories": len(g.trajectories),
            "metadata": _dumps(g.metadata), "metrics": gm, "metric_kinds": gk, "logs": list(g.logs),
            "exceptions": [e.model_dump() for e in g.exceptions],
        })
        for ti, t in enumerate(g.trajectories):
            tm, tk = _metric_columns(t.metrics, f"groups[{gi}].trajectories[{ti}]")
            traj_rows.append({
                **base, "trajectory_id": f"{group_id}:{ti}", "group_id": group_id, "group_index": gi,
                "trajectory_index": ti, "reward": t.reward,
                "messages": [encode_message(m) for m in t.messages_and_choices],
                "tools": None if t.tools is None else _dumps(t.tools),
                "metrics": tm, "metric_kinds": tk, "metadata": _dumps(t.metadata), "logs": list(t.logs),
                "additional_histories": [_encode_history(h) for h in t.additional_histories],
                "initial_policy_version": t.initial_policy_version,
                "final_policy_version": t.final_policy_version,
            })
    return traj_rows, group_rows


def _decode_history(row: Mapping[str, Any]) -> History:
    return History.model_construct(
        messages_and_choices=[decode_message(m) for m in row["messages"] or []],
        tools=None if row["tools"] is None else json.loads(row["tools"]),
    )


def decode_trajectory(row: Mapping[str, Any]) -> Trajectory:
    """A stored trajectory row back into the Trajectory that was logged."""
    return Trajectory.model_construct(
        messages_and_choices=[decode_message(m) for m in row["messages"] or []],
        tools=None if row["tools"] is None else json.loads(row["tools"]),
        additional_histories=[_decode_history(h) for h in row["additional_histories"] or []],
        reward=row["reward"],
        initial_policy_version=row["initial_policy_version"],
        final_policy_version=row["final_policy_version"],
        metrics=_metric_values(row["metrics"], row["metric_kinds"]),
        metadata=json.loads(row["metadata"]),
        logs=list(row["logs"] or []),
    )


def decode_groups(groups: pa.Table, trajectories: pa.Table) -> list[TrajectoryGroup]:
    """Groups rows plus their trajectory rows -> TrajectoryGroups, in the groups table's order."""
    with _gc_paused():
        return _decode_groups(groups, trajectories)


def _decode_groups(groups: pa.Table, trajectories: pa.Table) -> list[TrajectoryGroup]:
    by_group: dict[str, list[tuple[int, Trajectory]]] = {}
    for row in trajectories.to_pylist():
        by_group.setdefault(row["group_id"], []).append((row["trajectory_index"], decode_trajectory(row)))
    out = []
    for g in groups.to_pylist():
        members = [t for _, t in sorted(by_group.get(g["group_id"], []), key=lambda p: p[0])]
        out.append(TrajectoryGroup.model_construct(
            trajectories=members,
            exceptions=[PydanticException.model_construct(**e) for e in g["exceptions"] or []],
            metadata=json.loads(g["metadata"]),
            metrics=_metric_values(g["metrics"], g["metric_kinds"]),
            logs=list(g["logs"] or []),
        ))
    return out
