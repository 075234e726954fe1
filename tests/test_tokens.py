"""The tokens table: schema held to schemas/tokens.json, validation, idempotent writes, shards."""

from __future__ import annotations

import json
import math
import tempfile
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artstore as art
from artstore.schema import arrow_schema
from artstore.storage import datasets
from tests.token_rows import token_rows

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "tokens.json"


@pytest.fixture
def run(base_path):
    return art.open_store(base_path).run("email-search", "agent-001")


def as_lists(table: pa.Table) -> dict[str, list]:
    """sequence_id -> (input_ids, assistant_mask, logprobs with NaN as None), for comparisons."""
    out = {}
    for r in table.to_pylist():
        out[r["sequence_id"]] = (r["input_ids"], r["assistant_mask"],
                                 [None if math.isnan(x) else x for x in r["logprobs"]])
    return out


def expected_lists(rows: list[dict]) -> dict[str, list]:
    if not rows:
        return {}
    return as_lists(pa.Table.from_pylist(rows).select(["sequence_id", "input_ids", "assistant_mask", "logprobs"])
                    .cast(pa.schema([("sequence_id", pa.string()), ("input_ids", pa.list_(pa.int32())),
                                     ("assistant_mask", pa.list_(pa.int8())), ("logprobs", pa.list_(pa.float32()))])))


# -- schema --------------------------------------------------------------------------------------
def test_schema_file_is_what_the_design_says():
    spec = json.loads(SCHEMA_FILE.read_text())
    types = {f["name"]: f["type"] for f in spec["fields"]}
    assert types == {
        "sequence_id": "string", "trajectory_id": "string", "group_id": "string", "log_id": "string",
        "step": "int64", "split": "string", "input_ids": {"list": "int32"}, "assistant_mask": {"list": "int8"},
        "logprobs": {"list": "float32"}, "reward": "float64", "advantage": "float32", "num_tokens": "int32",
        "num_trainable": "int32", "tokenizer": "string", "recorded_at": "timestamp",
    }
    assert all(f["doc"] and f["nullable"] is False for f in spec["fields"])
    assert [f["name"] for f in spec["fields"] if f.get("primary_key")] == ["sequence_id"]


def test_stored_dataset_schema_is_the_schema_file(run):
    run.write_tokens(token_rows([3, 0, 5]))
    ds = datasets.open_dataset(run.table_location("tokens"))
    expected = arrow_schema("tokens")
    assert ds.schema.equals(expected, check_metadata=True)
    for field in expected:  # per-field docs and the primary key marker survive the round trip
        assert ds.schema.field(field.name).metadata == field.metadata
    assert run.tokens().schema.equals(expected)
    assert run.tokens(columns=["input_ids", "step"]).column_names == ["input_ids", "step"]


def test_empty_run_reads_empty(run):
    assert run.tokens().num_rows == 0 and run.tokens().schema.equals(arrow_schema("tokens"))
    assert list(run.token_batches(step=0)) == [] and run.token_count() == 0
    assert run.write_tokens([]) == 0 and not run.tokens_table().location.uri.endswith("tokens")


# -- writing ---------------------------------------------------------------------------------------
def test_rows_round_trip_with_derived_columns(run):
    rows = token_rows([4, 0, 7, 1], step=3)
    for r in rows:
        del r["recorded_at"]
    before = datetime.now().astimezone()
    run.write_tokens(rows)
    got = run.tokens(step=3)
    assert as_lists(got) == expected_lists(rows)
    assert got["num_tokens"].to_pylist() == [4, 0, 7, 1]
    assert got["num_trainable"].to_pylist() == [2, 0, 4, 1]
    assert all(t >= before for t in got["recorded_at"].to_pylist())
    assert got["recorded_at"].type.tz == "UTC"
    assert got["advantage"].type == pa.float32() and got["reward"].to_pylist() == [0.0, 1.0, 2.0, 0.0]


def test_accepts_tables_batches_and_column_dicts(run):
    rows = token_rows([2, 3], step=0)
    table = pa.Table.from_pylist(rows)  # inferred types: int64 lists, double logprobs; cast on write
    run.write_tokens(table)
    run.write_tokens(pa.Table.from_pylist(token_rows([5], step=1)).to_batches()[0])
    cols = {k: [r[k] for r in token_rows([1], step=2)] for k in rows[0]}
    run.write_tokens(cols)
    assert run.token_count() == 4 and run.tokens(step=2)["input_ids"].to_pylist() == [[0]]


def test_write_is_idempotent_and_a_retry_replaces(run):
    rows = token_rows([3, 4, 5], step=1)
    v1 = run.write_tokens(rows)
    v2 = run.write_tokens(rows)  # a retry after a crash: same rows, no duplicates
    assert v2 > v1 and run.token_count() == 3
    assert as_lists(run.tokens()) == expected_lists(rows)
    retokenized = token_rows([6, 4, 5], step=1, tokenizer="other", seed=7)
    run.write_tokens(retokenized)
    got = run.tokens()
    assert got.num_rows == 3 and set(got["tokenizer"].to_pylist()) == {"other"}
    assert as_lists(got) == expected_lists(retokenized)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 40)), max_size=8), min_size=1,
                       max_size=4))
def test_writes_upsert_like_a_dict(writes):
    """Any sequence of writes leaves exactly one row per sequence_id: the last one written."""
    with tempfile.TemporaryDirectory() as d:
        run = art.open_store(d).run("p", "m")
        model: dict[str, tuple] = {}
        for w, write in enumerate(writes):
            by_id = dict(write)  # one row per id in one write
            rows = []
            for i, n in by_id.items():
                row = token_rows([n], step=0, seed=w)[0]
                row["sequence_id"] = f"s{i}"
                rows.append(row)
            run.write_tokens(rows)
            model.update(expected_lists(rows))
        assert as_lists(run.tokens()) == model


def test_concurrent_writers_of_the_same_rows_leave_one_copy(run):
    rows = token_rows([3] * 20, step=0)
    errors = []

    def write():
        try:
            run.write_tokens(rows)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ids = run.tokens(columns=["sequence_id"])["sequence_id"].to_pylist()
    assert sorted(ids) == sorted(r["sequence_id"] for r in rows)


# -- bad input: a clear error naming the field, nothing written ------------------------------------
def _bad(field: str, value):
    def edit(rows):
        rows[1][field] = value
        return rows
    return edit


BAD = [
    ("input_ids", _bad("input_ids", ["x"])),
    ("input_ids", _bad("input_ids", [2**40])),
    ("input_ids", _bad("input_ids", [-1, 2, 3])),
    ("input_ids", _bad("input_ids", None)),
    ("input_ids", _bad("input_ids", [1, None, 3])),
    ("assistant_mask", _bad("assistant_mask", [1, 1])),
    ("assistant_mask", _bad("assistant_mask", [0, 2, 1])),
    ("logprobs", _bad("logprobs", [0.0])),
    ("logprobs", _bad("logprobs", [None, 0.0, 0.0])),
    ("step", _bad("step", -1)),
    ("step", _bad("step", "one")),
    ("split", _bad("split", "../x")),
    ("reward", _bad("reward", math.nan)),
    ("advantage", _bad("advantage", math.inf)),
    ("num_tokens", _bad("num_tokens", 99)),
    ("num_trainable", _bad("num_trainable", 0)),
    ("sequence_id", _bad("sequence_id", "")),
    ("sequence_id", _bad("sequence_id", "t0-0")),
    ("sequence_id", _bad("sequence_id", None)),
    ("recorded_at", _bad("recorded_at", datetime(2026, 1, 1))),  # noqa: DTZ001 (naive on purpose)
    ("tokenizer", _bad("tokenizer", None)),
    ("bogus", _bad("bogus", 1)),
    ("group_id", lambda rows: [{k: v for k, v in r.items() if k != "group_id"} for r in rows]),
]


@pytest.mark.parametrize(("field", "edit"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_input_names_the_field_and_writes_nothing(run, field, edit):
    run.write_tokens(token_rows([2], step=9, prefix="keep"))
    before = run.tokens_table().version()
    rows = token_rows([3, 3, 3], step=0)
    if field == "num_tokens":
        for r in rows:
            r["num_tokens"] = 3
    if field == "num_trainable":
        for r in rows:
            r["num_trainable"] = 2
    with pytest.raises(art.ValidationError) as raised:
        run.write_tokens(edit(rows))
    assert raised.value.field == field and str(raised.value).startswith(f"{field}:")
    assert run.tokens_table().version() == before and run.token_count() == 1


def test_bad_arrow_input_names_the_field(run):
    table = pa.Table.from_pylist(token_rows([2, 3]))
    bad = table.set_column(table.schema.get_field_index("step"), "step", pa.array(["a", "b"]))
    with pytest.raises(art.ValidationError, match="^step:"):
        run.write_tokens(bad)
    naive = table.set_column(table.schema.get_field_index("recorded_at"), "recorded_at",
                             pa.array([datetime(2026, 1, 1)] * 2))  # noqa: DTZ001
    with pytest.raises(art.ValidationError, match="^recorded_at: must be timezone-aware"):
        run.write_tokens(naive)
    with pytest.raises(art.ValidationError, match="^tokens:"):
        run.write_tokens("not rows")
    assert run.token_count() == 0


def test_bad_read_arguments(run):
    run.write_tokens(token_rows([2]))
    with pytest.raises(art.ValidationError, match="^columns:"):
        run.tokens(columns=["nope"])
    with pytest.raises(art.ValidationError, match="^batch_size:"):
        list(run.token_batches(batch_size=0))
    with pytest.raises(art.ValidationError, match="^rank:"):
        list(run.token_batches(rank=2, world_size=2))
    with pytest.raises(art.ValidationError, match="^world_size:"):
        list(run.token_batches(world_size=0))
    with pytest.raises(art.ValidationError, match="^step:"):
        run.tokens(step="1")


# -- sharded batches ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_range_is_even_and_covers_once(n, world):
    ranges = [art.shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=20, deadline=None)
@given(
    layout=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 12)), min_size=1, max_size=6),
    rewrite=st.booleans(),
    batch_size=st.integers(1, 9),
    world=st.integers(1, 5),
    step=st.integers(0, 2),
)
def test_token_batches_shard_every_matching_row_once(layout, rewrite, batch_size, world, step):
    """Steps written in several interleaved writes (so a step's rows may not be contiguous in
    storage), maybe partly re-written (deletions): every rank's batches are exact, and together
    they hold each row of the step once, in storage order."""
    with tempfile.TemporaryDirectory() as d:
        run = art.open_store(d).run("p", "m")
        for w, (s, n) in enumerate(layout):
            run.write_tokens(token_rows([w % 5] * n, step=s, prefix=f"w{w}-"))
        if rewrite and layout[0][1]:
            s, n = layout[0]
            run.write_tokens(token_rows([9] * max(1, n // 2), step=s, prefix="w0-", seed=3))
        stored = run.tokens(step=step, columns=["sequence_id", "input_ids"])
        shards = []
        for rank in range(world):
            batches = list(run.token_batches(step=step, columns=["sequence_id", "input_ids"],
                                             batch_size=batch_size, rank=rank, world_size=world))
            assert all(b.num_rows == batch_size for b in batches[:-1])
            assert all(0 < b.num_rows <= batch_size for b in batches)
            shards.append(pa.Table.from_batches(batches, schema=stored.schema) if batches else stored.slice(0, 0))
        sizes = [s.num_rows for s in shards]
        assert max(sizes) - min(sizes) <= 1
        assert pa.concat_tables(shards).equals(stored)


def test_version_pins_what_a_reader_sees(run):
    v1 = run.write_tokens(token_rows([2, 2], step=0))
    run.write_tokens(token_rows([3], step=0, prefix="late"))
    assert run.token_count(step=0) == 3 and run.token_count(step=0, version=v1) == 2
    rows = [b.num_rows for b in run.token_batches(step=0, batch_size=10, version=v1)]
    assert rows == [2] and run.tokens(version=v1).num_rows == 2


def test_split_filter(run):
    run.write_tokens(token_rows([1, 2], step=0, split="train"))
    run.write_tokens(token_rows([3], step=0, split="val", prefix="v"))
    assert run.token_count(split="val") == 1 and run.tokens(step=0, split="train").num_rows == 2
    got = pa.Table.from_batches(list(run.token_batches(step=0, split="train", batch_size=1)))
    assert got["num_tokens"].to_pylist() == [1, 2]
    assert np.all(np.diff(got["num_tokens"].to_numpy()) > 0)
