"""Trajectories and groups <-> Arrow rows of the `trajectories` and `groups` tables.

Typed columns hold what people query (role, content, tool calls, reward, metrics); a trajectory's
messages are parallel `message_*` list columns (see `artstore.records.message_columns`), each message
keeping `raw`, the item as given minus its string content, so the round trip is exact. The
trajectories table is built column by column; reading back parses JSON once per column.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pydantic
import pydantic_core

from artstore.errors import SchemaVersionError, ValidationError
from artstore.records.message_columns import (
    READ_COLUMNS,
    MessageColumns,
    decode_lists,
    decode_structs,
    dumps,
)
from artstore.records.trajectory import (
    History,
    PydanticException,
    Trajectory,
    TrajectoryGroup,
    field_path,
)
from artstore.schema import arrow_schema, table_spec
from artstore.storage import Location, datasets

TRAJECTORIES_VERSION = table_spec("trajectories")["schema_version"]
# The trajectories columns `decode_groups` needs: not the message fields only SQL reads.
DECODE_COLUMNS = ("group_id", "trajectory_index", "reward", "tools", "metrics", "metric_kinds", "metadata", "logs",
                  "initial_policy_version", "final_policy_version", "additional_histories", *READ_COLUMNS)

_MAX_EXACT_INT = 2**53  # largest integer a float64 metric holds exactly


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


def _metric_columns(metrics: Mapping[str, float | int | bool], where: str) -> tuple[list, str | None]:
    kinds = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            kinds[k] = "bool"
        elif isinstance(v, int):
            if abs(v) > _MAX_EXACT_INT:
                raise ValidationError(f"{where}.metrics[{k!r}]", f"integer {v} is too large to store exactly")
            kinds[k] = "int"
    return [(k, float(v)) for k, v in metrics.items()], (dumps(kinds) if kinds else None)


def _metric_values(pairs: list[tuple[str, float]] | None, kinds_json: str | None,
                   parsed: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The metrics dict of a row; `parsed` memoizes `kinds_json` across the rows of one read (most
    rows of a step share one, e.g. {"turns": "int", "correct": "bool"}). Its dicts are only read."""
    if not kinds_json:
        kinds = {}
    elif parsed is None:
        kinds = json.loads(kinds_json)
    elif (kinds := parsed.get(kinds_json)) is None:
        kinds = parsed[kinds_json] = json.loads(kinds_json)
    cast = {"bool": bool, "int": int}
    return {k: cast[kinds[k]](v) if k in kinds else v for k, v in (pairs or [])}


def encode_groups(
    groups: Sequence[TrajectoryGroup], *, log_id: str, write_id: str, split: str, step: int, recorded_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """The `trajectories` and `groups` rows of one log call."""
    base = {"log_id": log_id, "write_id": write_id, "split": split, "step": step, "recorded_at": recorded_at}
    with _gc_paused():
        try:
            trajectories, group_rows = _rows(groups, base, log_id)
            return trajectories, pa.Table.from_pylist(group_rows, schema=arrow_schema("groups"))
        except (pa.ArrowException, UnicodeError, pydantic_core.PydanticSerializationError) as e:
            # the only such input: text that is not UTF-8 (a lone surrogate)
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


def _rows(groups: Sequence[TrajectoryGroup], base: dict[str, Any], log_id: str) -> tuple[pa.Table, list]:
    """The trajectories table (built column by column: no dict per row or message) and the
    groups rows (one dict per group: a step has few)."""
    schema = arrow_schema("trajectories")
    group_rows: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {n: [] for n in (
        "trajectory_id", "group_id", "group_index", "trajectory_index", "reward", "tools", "metrics",
        "metric_kinds", "metadata", "logs", "initial_policy_version", "final_policy_version")}
    messages, histories, history_offsets, history_tools = MessageColumns(), MessageColumns(), [0], []
    conversations: list[Sequence[Any]] = []
    history_conversations: list[Sequence[Any]] = []
    for gi, g in enumerate(groups):
        group_id = f"{log_id}:{gi}"
        gm, gk = _metric_columns(g.metrics, f"groups[{gi}]")
        group_rows.append({
            **base, "group_id": group_id, "group_index": gi, "num_trajectories": len(g.trajectories),
            "metadata": dumps(g.metadata), "metrics": gm, "metric_kinds": gk, "logs": list(g.logs),
            "exceptions": [e.model_dump() for e in g.exceptions],
        })
        for ti, t in enumerate(g.trajectories):
            tm, tk = _metric_columns(t.metrics, f"groups[{gi}].trajectories[{ti}]")
            cols["trajectory_id"].append(f"{group_id}:{ti}")
            cols["group_id"].append(group_id)
            cols["group_index"].append(gi)
            cols["trajectory_index"].append(ti)
            cols["reward"].append(t.reward)
            cols["tools"].append(None if t.tools is None else dumps(t.tools))
            cols["metrics"].append(tm)
            cols["metric_kinds"].append(tk)
            cols["metadata"].append(dumps(t.metadata))
            cols["logs"].append(t.logs)
            cols["initial_policy_version"].append(t.initial_policy_version)
            cols["final_policy_version"].append(t.final_policy_version)
            conversations.append(t.messages_and_choices)
            for h in t.additional_histories:
                history_conversations.append(h.messages_and_choices)
                history_tools.append(None if h.tools is None else dumps(h.tools))
            history_offsets.append(len(history_tools))
    messages.add_all(conversations)
    histories.add_all(history_conversations)
    n = len(cols["trajectory_id"])
    types = _types(schema)
    arrays = {name: pa.array(values, types[name]) for name, values in cols.items()}
    arrays |= {k: pa.array([v] * n, types[k]) for k, v in base.items()}
    arrays |= messages.lists(schema)
    history_type = schema.field("additional_histories").type
    arrays["additional_histories"] = pa.ListArray.from_arrays(
        pa.array(history_offsets, pa.int32()),
        _histories(histories, history_tools, history_type.value_type) if history_tools
        else _no_histories(history_type.value_type),
        type=history_type)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema), group_rows


@functools.cache
def _types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """{column: its type} of `schema` (a field look-up by name costs ~3 us)."""
    return {f.name: f.type for f in schema}


def _histories(histories: MessageColumns, tools: list[str | None], history: pa.StructType) -> pa.StructArray:
    """The additional histories of a log's trajectories, one struct per history."""
    return pa.StructArray.from_arrays([histories.struct(history.field("messages").type), pa.array(tools, pa.string())],
                                      fields=list(history))


@functools.cache
def _no_histories(history: pa.StructType) -> pa.StructArray:
    """`_histories` of none, built once (~0.2 ms of empty arrays) by the same code, so its
    buffers, and the log's content id, are those a build for each log would give."""
    return _histories(MessageColumns(), [], history)


def decode_trajectories(table: pa.Table) -> list[Trajectory]:
    """Stored trajectory rows (at least `DECODE_COLUMNS`) back into the Trajectories logged."""
    conversations = decode_lists(table)
    columns = {c: table.column(c).to_pylist() for c in (
        "reward", "tools", "metrics", "metric_kinds", "metadata", "logs", "initial_policy_version",
        "final_policy_version", "additional_histories")}
    metadata = json.loads("[" + ",".join(columns["metadata"]) + "]")  # one parse for all rows
    tools = json.loads("[" + ",".join("null" if t is None else t for t in columns["tools"]) + "]")
    stored = [h or [] for h in columns["additional_histories"]]
    histories = iter(decode_structs([h["messages"] for hs in stored for h in hs]))  # all rows' at once
    out, kinds = [], {}
    for i, conversation in enumerate(conversations):
        out.append(Trajectory.model_construct(
            messages_and_choices=conversation,
            tools=tools[i],
            additional_histories=[History.model_construct(
                messages_and_choices=next(histories), tools=None if h["tools"] is None else json.loads(h["tools"]))
                for h in stored[i]],
            reward=columns["reward"][i],
            initial_policy_version=columns["initial_policy_version"][i],
            final_policy_version=columns["final_policy_version"][i],
            metrics=_metric_values(columns["metrics"][i], columns["metric_kinds"][i], kinds),
            metadata=metadata[i],
            logs=columns["logs"][i] or [],
        ))
    return out


def decode_groups(groups: pa.Table, trajectories: pa.Table) -> list[TrajectoryGroup]:
    """Groups rows plus their trajectory rows -> TrajectoryGroups, in the groups table's order."""
    check_layout(trajectories.schema)
    with _gc_paused():
        return _decode_groups(groups, trajectories)


def _decode_groups(groups: pa.Table, trajectories: pa.Table) -> list[TrajectoryGroup]:
    by_group: dict[str, list[tuple[int, Trajectory]]] = {}
    for gid, index, t in zip(trajectories.column("group_id").to_pylist(),
                             trajectories.column("trajectory_index").to_pylist(),
                             decode_trajectories(trajectories), strict=True):
        by_group.setdefault(gid, []).append((index, t))
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


def check_stored_layout(trajectories: Location) -> None:
    """`check_layout` of the trajectories table stored at `trajectories` (on an error path: it
    opens the table)."""
    ds = datasets.open_dataset(trajectories)
    if ds is not None:
        check_layout(ds.schema)


def check_layout(schema: pa.Schema) -> None:
    """Raise SchemaVersionError for a trajectories table of schema version 1 (one `messages`
    struct column; written by artstore 0.1.0 before the message_* columns)."""
    if "messages" in schema.names and "message_raw" not in schema.names:
        raise SchemaVersionError(
            "trajectories", 1, TRAJECTORIES_VERSION,
            "export the run with the artstore that wrote it (`artstore export-art PROJECT/MODEL DEST`, ART's "
            "lossless v2 format), then import DEST into a new store with this one (`artstore import-art DEST`)")
