"""The trajectories table's row format (schema version 2): messages as parallel `message_*` list
columns, built column by column, read back exactly; a version 1 table is refused by name."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat.chat_completion import Choice

import artstore as art
from artstore.log import journal
from artstore.records.message_columns import COLUMNS, dumps
from artstore.schema import arrow_schema
from artstore.storage import writes


def _tool_trajectory(i: int) -> art.Trajectory:
    logprobs = {"content": [{"token": "a", "logprob": float("-inf"), "bytes": None, "top_logprobs": []},
                            {"token": "b", "logprob": -0.5, "bytes": [98], "top_logprobs": []}], "refusal": None}
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "sys"},
            {"content": "first the content", "role": "user"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            {"role": "tool", "tool_call_id": f"c{i}", "content": "ERROR: boom"},
            Choice(finish_reason="stop", index=0, logprobs=logprobs, message={"role": "assistant", "content": "ok"}),
        ],
        reward=i, metadata={"big": 2**80, "neg_inf": float("-inf"), "text": "é\u2028\x00"})


@pytest.fixture
def model(tmp_path):
    return art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])


def test_messages_are_parallel_lists_with_the_same_offsets(model):
    groups = [art.TrajectoryGroup([_tool_trajectory(i) for i in range(3)])]
    model.log_sync(groups, step=0)
    table = model.run.trajectories(step=0)
    assert arrow_schema("trajectories").metadata[b"artstore.schema_version"] == b"2"
    assert "messages" not in table.column_names and set(COLUMNS) <= set(table.column_names)
    for row in table.to_pylist():
        assert {len(row[c]) for c in COLUMNS} == {5}
        assert row["message_role"] == ["system", "user", "assistant", "tool", "assistant"]
        assert row["message_raw"][:2] == ['{"role":"system"}', '{"role":"user"}']  # content is not stored twice
        assert row["message_is_choice"] == row["message_trainable"] == [False, False, True, False, True]
        assert row["message_tool_calls"][0] is None and row["message_tool_calls"][2][0]["name"] == "f"
        assert row["message_logprobs"][4] == [float("-inf"), -0.5] and row["message_logprobs"][2] is None
    assert model.run.groups(step=0) == groups


def test_non_finite_logprobs_big_ints_and_nan_read_back(model):
    t = _tool_trajectory(7)
    t.metadata["nan"] = float("nan")
    model.log_sync([art.TrajectoryGroup([t])], step=0)
    (back,) = model.run.groups(step=0)[0].trajectories
    choice = back.messages_and_choices[4]
    assert isinstance(choice, Choice) and choice.logprobs.content[0].logprob == float("-inf")
    assert back.messages_and_choices[:4] == t.messages_and_choices[:4] and choice == t.messages_and_choices[4]
    assert choice.message.model_fields_set == t.messages_and_choices[4].message.model_fields_set
    assert math.isnan(back.metadata.pop("nan")) and type(back.metadata["big"]) is int
    assert back.metadata == {k: v for k, v in t.metadata.items() if k != "nan"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_dumps_reads_back_as_the_stdlib_json_does(value):
    ours, stdlib = json.loads(dumps(value)), json.loads(json.dumps(value))
    assert json.dumps(ours) == json.dumps(stdlib)  # equal text: NaN compares unequal to itself


def _v1_table() -> pa.Table:
    """One row in the version 1 layout: a `messages` list<struct> column instead of message_*."""
    schema = arrow_schema("trajectories")
    fields = [f for f in schema if not f.name.startswith("message_")]
    message = pa.struct([("role", pa.string()), ("raw", pa.string())])
    fields.insert(9, pa.field("messages", pa.list_(message)))
    row = {f.name: None for f in fields} | {
        "log_id": "old", "write_id": "w-old", "split": "train", "step": 0, "trajectory_id": "old:0:0",
        "group_id": "old:0", "group_index": 0, "trajectory_index": 0, "reward": 1.0,
        "messages": [{"role": "user", "raw": "{}"}], "recorded_at": writes.now_utc()}
    return pa.Table.from_pylist([row], schema=pa.schema(fields))


def test_a_version_1_table_is_refused_naming_the_version_and_what_to_do(model):
    # artstore 0.1.0 wrote a log's rows to the data tables: a logs table from before the journal
    logs_schema = pa.schema([f for f in arrow_schema("logs") if f.name not in journal.PAYLOAD_COLUMNS])
    writes.create(model.run.table_location("logs"), logs_schema.empty_table())
    model.log_sync([art.TrajectoryGroup([_tool_trajectory(0)])], step=0)
    loc = model.run.table_location("trajectories")
    shutil.rmtree(loc.uri)  # as artstore 0.1.0 left it: the same run, its table in the old layout
    writes.append(loc, _v1_table())
    with pytest.raises(art.SchemaVersionError, match="schema version 1.*version 2.*export-art"):
        model.run.groups(step=0)
    with pytest.raises(art.SchemaVersionError, match="schema version 1"):
        model.log_sync([art.TrajectoryGroup([_tool_trajectory(1)])], step=1)
    assert model.run.logs().num_rows == 1  # the refused log left no committed row
