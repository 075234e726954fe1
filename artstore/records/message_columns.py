"""Messages <-> parallel Arrow list columns (`message_role`, `message_content`, ..., `message_raw`).

A conversation is stored as one list per message field, all with the same offsets: entry i of
each list is message i. Building them is columnar (one Python list per field for a whole log
call, one `pa.array` each), and reading back needs only `message_content`, `message_is_choice`
and `message_raw`, parsed in one JSON call per kind (dicts, Choices) for all rows at once.

`raw` is the item as given minus its string content (which is in `content`): a dict message's
keys as given, or a Choice's `model_dump(mode="json", exclude_unset=True)`. Decoding puts the
content back, so what comes back equals what was logged, with the same types (dict or Choice).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import pydantic_core

from artstore.records.trajectory import ROLES, Choice

# The message fields, in schema order; the trajectories table stores each as `message_{field}`.
FIELDS = ("role", "content", "content_parts", "name", "tool_calls", "tool_call_id", "refusal", "trainable",
          "is_choice", "finish_reason", "logprobs", "raw")
COLUMNS = tuple(f"message_{f}" for f in FIELDS)
READ_COLUMNS = ("message_content", "message_is_choice", "message_raw")  # what decoding needs



def dumps(value: Any) -> str:
    """Compact JSON of a plain JSON value (pydantic's Rust encoder: ~4x the stdlib's speed). Exact
    for what json.loads reads back: big ints as digits, non-finite floats as NaN/Infinity, as the
    stdlib writes them. Raises pydantic_core.PydanticSerializationError for text that is not
    UTF-8 (a lone surrogate)."""
    return pydantic_core.to_json(value, inf_nan_mode="constants").decode()


_CHOICES = pydantic.TypeAdapter(list[Choice])  # one validation call for a whole step's Choices
_ROLE_ONLY = {r: dumps({"role": r}) for r in ROLES}  # `raw` of a {role, content: str} message
_STRINGS = ("role", "content", "content_parts", "name", "tool_call_id", "refusal", "finish_reason", "raw")


def _text_of(content: Any) -> str | None:
    if isinstance(content, str) or content is None:
        return content
    if isinstance(content, list):  # multi-part: the text parts, for search
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class MessageColumns:
    """Accumulates the messages of many conversations as parallel lists, one entry per message.

    `add(conversation)` appends one conversation (a list of message dicts and Choices, as
    validated by `records`); `lists(schema)` or `struct(list_type)` gives the Arrow arrays. Text
    that is not UTF-8 (a lone surrogate) raises from `dumps` (PydanticSerializationError) or
    `pa.array` (ArrowException, UnicodeError): the caller names the field.
    """

    def __init__(self) -> None:
        self.offsets = [0]  # message i of conversation k: entries offsets[k] <= i < offsets[k + 1]
        self.values: dict[str, list[Any]] = {f: [] for f in FIELDS if f not in ("tool_calls", "trainable")}
        self.call_offsets = [0]  # tool calls of message i: call_offsets[i] .. call_offsets[i + 1]
        self.has_calls: list[bool] = []
        self.calls: tuple[list, list, list, list] = ([], [], [], [])  # id, type, name, arguments

    def add_all(self, conversations: Iterable[Sequence[dict[str, Any] | Choice]]) -> None:
        """`add` each of `conversations`, their Choices dumped in one serializer call (a per-Choice
        `model_dump` costs ~1 us more each). Only exact `Choice`s: a subclass dumps its own fields."""
        conversations = list(conversations)
        choices = [item for c in conversations for item in c if type(item) is Choice]
        dumped = iter(_CHOICES.dump_python(choices, mode="json", exclude_unset=True)) if choices else None
        for conversation in conversations:
            self.add(conversation, dumped)

    def add(self, conversation: Iterable[dict[str, Any] | Choice], dumped: Iterator[dict[str, Any]] | None = None) -> None:
        """Append one conversation; `dumped` (from `add_all`) yields its exact Choices' dumps, in order."""
        v = self.values
        role, content, parts, name, call_id, refusal = (v["role"].append, v["content"].append,
                                                        v["content_parts"].append, v["name"].append,
                                                        v["tool_call_id"].append, v["refusal"].append)
        is_choice, finish, logprobs, raw = (v["is_choice"].append, v["finish_reason"].append,
                                            v["logprobs"].append, v["raw"].append)
        has_calls, call_offsets = self.has_calls.append, self.call_offsets
        for item in conversation:
            if type(item) is dict and len(item) == 2 and type(item.get("content")) is str \
                    and item.get("role") in _ROLE_ONLY:  # the common {role, content}: no dict, no JSON
                role(item["role"])
                content(item["content"])
                raw(_ROLE_ONLY[item["role"]])
                for add_none in (parts, name, call_id, refusal, finish, logprobs):
                    add_none(None)
                is_choice(False)
                has_calls(False)
                call_offsets.append(call_offsets[-1])
                continue
            if isinstance(item, Choice):
                dump = next(dumped) if dumped is not None and type(item) is Choice else \
                    item.model_dump(mode="json", exclude_unset=True)  # exact, -inf logprobs included
                msg = dump["message"]
                is_choice(True)
                finish(dump.get("finish_reason"))
                lp = dump.get("logprobs")
                logprobs([t["logprob"] for t in lp["content"]] if lp and lp.get("content") else None)
            else:
                dump = msg = item
                is_choice(False)
                finish(None)
                logprobs(None)
            text = msg.get("content")
            if isinstance(text, str):
                rest = {k: x for k, x in msg.items() if k != "content"}
                if dump is msg:
                    dump = rest
                else:
                    dump["message"] = rest
                content(text)
                parts(None)
            else:
                content(_text_of(text))
                parts(dumps(text) if isinstance(text, list) else None)
            raw(dumps(dump))
            role(msg.get("role"))
            name(x if type(x := msg.get("name")) is str else _str_or_none(x))  # inlined: 3 calls a message
            call_id(x if type(x := msg.get("tool_call_id")) is str else _str_or_none(x))
            refusal(x if type(x := msg.get("refusal")) is str else _str_or_none(x))
            self._add_calls(msg.get("tool_calls"))
        self.offsets.append(len(v["raw"]))

    def _add_calls(self, calls: Any) -> None:
        ids, types, names, args = self.calls
        n = 0
        for c in calls or ():
            if isinstance(c, dict):
                fn = c.get("function") or {}
                ids.append(c.get("id"))
                types.append(c.get("type"))
                names.append(fn.get("name"))
                args.append(fn.get("arguments"))
                n += 1
        self.has_calls.append(n > 0)  # no calls (or only non-dict ones): null, as an empty list would mislead
        self.call_offsets.append(self.call_offsets[-1] + n)

    def _arrays(self, types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
        """One array per field (one entry per message), of the item types `types` gives."""
        out = {f: pa.array(self.values[f], types[f]) for f in _STRINGS}
        flags = pa.array(self.values["is_choice"], pa.bool_())
        out["is_choice"] = out["trainable"] = flags
        out["logprobs"] = pa.array(self.values["logprobs"], types["logprobs"])
        call_type = types["tool_calls"].value_type
        calls = pa.StructArray.from_arrays([pa.array(c, pa.string()) for c in self.calls],
                                           fields=list(call_type))
        out["tool_calls"] = pa.ListArray.from_arrays(
            pa.array(self.call_offsets, pa.int32()), calls, type=types["tool_calls"],
            mask=pa.array([not has for has in self.has_calls], pa.bool_()))
        return out

    def lists(self, schema: pa.Schema) -> dict[str, pa.Array]:
        """The `message_*` columns of `schema` (one list per conversation added)."""
        list_types = _list_types(schema)
        offsets = pa.array(self.offsets, pa.int32())
        return {f"message_{f}": pa.ListArray.from_arrays(offsets, a, type=list_types[f])
                for f, a in self._arrays({f: t.value_type for f, t in list_types.items()}).items()}

    def struct(self, list_type: pa.ListType) -> pa.ListArray:
        """The conversations as one list<struct> array of `list_type` (additional histories)."""
        struct_type = list_type.value_type
        arrays = self._arrays({f.name: f.type for f in struct_type})
        values = pa.StructArray.from_arrays([arrays[f.name] for f in struct_type], fields=list(struct_type))
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), values, type=list_type)


@functools.cache
def _list_types(schema: pa.Schema) -> dict[str, pa.ListType]:
    """{field: the type of its `message_{field}` column in `schema`} (a field look-up costs ~3 us)."""
    return {f: schema.field(f"message_{f}").type for f in FIELDS}


def _flat(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    return pc.list_flatten(column).to_pylist()


def decode_conversations(content: Sequence[str | None], is_choice: Sequence[bool], raw: Sequence[str],
                         offsets: Sequence[int]) -> list[list[dict[str, Any] | Choice]]:
    """Flat per-message values (as `MessageColumns` stored them) -> one list of items per
    conversation, conversation k being entries offsets[k]..offsets[k + 1]. Data read back was
    validated when written: dicts come from one json.loads and Choices from one validation call."""
    choice_at = [i for i, c in enumerate(is_choice) if c]
    dict_at = [i for i, c in enumerate(is_choice) if not c]
    items: list[Any] = [None] * len(raw)
    if dict_at:
        for i, d in zip(dict_at, json.loads("[" + ",".join([raw[i] for i in dict_at]) + "]"), strict=True):
            if content[i] is not None and "content" not in d:
                d["content"] = content[i]
            items[i] = d
    if choice_at:
        for i, c in zip(choice_at, _CHOICES.validate_json("[" + ",".join([raw[i] for i in choice_at]) + "]"),
                        strict=True):
            if content[i] is not None and "content" not in c.message.model_fields_set:
                c.message.content = content[i]  # marks it set, as it was when logged
            items[i] = c
    return [items[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]


def decode_lists(table: pa.Table) -> list[list[dict[str, Any] | Choice]]:
    """The conversations of a table with `READ_COLUMNS` (one per row)."""
    lengths = pc.list_value_length(table.column("message_raw")).fill_null(0).to_pylist()
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return decode_conversations(_flat(table.column("message_content")), _flat(table.column("message_is_choice")),
                                _flat(table.column("message_raw")), offsets)


def decode_structs(conversations: Sequence[Sequence[dict[str, Any]] | None]) -> list[list[dict[str, Any] | Choice]]:
    """Conversations stored as lists of message structs (python dicts with the FIELDS keys)."""
    offsets, content, is_choice, raw = [0], [], [], []
    for conversation in conversations:
        for m in conversation or ():
            content.append(m["content"])
            is_choice.append(m["is_choice"])
            raw.append(m["raw"])
        offsets.append(len(raw))
    return decode_conversations(content, is_choice, raw, offsets)
