"""A stored trajectory row (its parallel `message_*` columns) -> a conversation the viewer shows.

Each message keeps what the store holds: role, text, multi-part content, name, tool calls (id,
function name, arguments as the model wrote them), the call a tool result answers (and that
call's function name), refusal, finish reason, whether it was sampled (trainable). Logprobs are
large: a message carries how many it has, and the values only when asked.
"""

from __future__ import annotations

import json
from typing import Any

from artstore.ui import jsonable

MESSAGE_COLUMNS = ("message_role", "message_content", "message_content_parts", "message_name",
                   "message_tool_calls", "message_tool_call_id", "message_refusal", "message_trainable",
                   "message_finish_reason", "message_logprobs")


def _arguments(text: str | None) -> Any:
    """Tool-call arguments parsed when they are JSON (shown indented), else the text as written."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def messages(row: dict[str, Any], with_logprobs: bool = False) -> list[dict[str, Any]]:
    """The messages of one trajectory row (a dict with the MESSAGE_COLUMNS), in order."""
    roles = row["message_role"] or []
    called: dict[str, str | None] = {}  # tool call id -> function name, for the results that follow
    out = []
    for i, role in enumerate(roles):
        calls = row["message_tool_calls"][i] or []
        for c in calls:
            if c.get("id"):
                called[c["id"]] = c.get("name")
        logprobs = row["message_logprobs"][i] if row.get("message_logprobs") is not None else None
        call_id = row["message_tool_call_id"][i]
        m = {
            "index": i,
            "role": role,
            "content": row["message_content"][i],
            "content_parts": jsonable.parse_json(row["message_content_parts"][i]),
            "name": row["message_name"][i],
            "tool_calls": [{"id": c.get("id"), "type": c.get("type"), "name": c.get("name"),
                            "arguments": _arguments(c.get("arguments"))} for c in calls],
            "tool_call_id": call_id,
            "tool_name": called.get(call_id) if call_id else None,
            "refusal": row["message_refusal"][i],
            "trainable": bool(row["message_trainable"][i]),
            "finish_reason": row["message_finish_reason"][i],
            "logprob_count": len(logprobs) if logprobs else 0,
        }
        if with_logprobs and logprobs:
            m["logprobs"] = jsonable.value(logprobs)
        out.append(m)
    return out


def history_messages(history: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of one additional history (a list of message structs), as `messages` gives them."""
    msgs = history.get("messages") or []
    row = {c: [m.get(c[len("message_"):]) for m in msgs] for c in MESSAGE_COLUMNS}
    row["message_logprobs"] = None
    return messages(row)


def trajectory(row: dict[str, Any], with_logprobs: bool = False) -> dict[str, Any]:
    """One trajectory row -> {id, index, reward, metrics, metadata, tools, logs, messages, ...}."""
    kinds = jsonable.parse_json(row.get("metric_kinds")) or {}
    metrics = {}
    for k, v in (row.get("metrics") or []):
        # booleans and ints are stored as float64, with their kind beside them
        metrics[k] = bool(v) if kinds.get(k) == "bool" else int(v) if kinds.get(k) == "int" and v == v else v
    return {
        "trajectory_id": row["trajectory_id"],
        "group_id": row["group_id"],
        "index": row["trajectory_index"],
        "reward": jsonable.value(row["reward"]),
        "metrics": jsonable.value(metrics),
        "metadata": jsonable.value(jsonable.parse_json(row.get("metadata"))),
        "tools": jsonable.value(jsonable.parse_json(row.get("tools"))),
        "logs": row.get("logs") or [],
        "initial_policy_version": row.get("initial_policy_version"),
        "final_policy_version": row.get("final_policy_version"),
        "messages": messages(row, with_logprobs),
        "additional_histories": [{"messages": history_messages(h), "tools": jsonable.parse_json(h.get("tools"))}
                                 for h in (row.get("additional_histories") or [])],
    }
