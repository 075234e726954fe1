"""Every Lance dataset a run holds has exactly the schema of its file in schemas/: names, types,
nullability and the primary-key marker Lance's merge_insert relies on. Field docs live in the
schema files only: Lance would repeat them in every manifest and data file."""

from __future__ import annotations

import pyarrow as pa
import pytest

import artstore as art
from artstore.log import fold
from artstore.schema import PRIMARY_KEY_META, arrow_schema, field_doc, table_names, table_spec
from artstore.storage import datasets
from tests.conftest import tool_call_trajectory
from tests.token_rows import token_rows

WRITTEN_HERE = {"trajectories", "groups", "metrics", "logs", "checkpoints", "tokens", "state", "configs"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = art.TrainableModel(name="m", project="p", base_model="base", report_metrics=[],
                               base_path=str(tmp_path_factory.mktemp("store")), config={"lr": 0.1})
    group = art.TrajectoryGroup([tool_call_trajectory(0.5, 0, turns=3), RuntimeError("boom")],
                                metadata={"k": [1, {"x": None}]}, metrics={"judge": True})
    model.log_sync([group], split="train", metrics={"loss/train": 0.25})
    model.merge_state({"seen": 1})  # state.lance: a log alone writes none (its sums ride in its logs row)
    fold.fold(model.run.location)  # the journaled log's rows into the data tables
    checkpoints = model.run.checkpoints_table()
    checkpoints.begin(1, base_model="base", table_versions={"trajectories": 1})
    checkpoints.mark_ready(1, size_bytes=10)
    model.run.write_tokens(token_rows([3, 0], step=0))
    return model.run


def test_every_schema_file_names_a_table_the_tests_write():
    assert WRITTEN_HERE <= set(table_names())


@pytest.mark.parametrize("table", table_names())
def test_dataset_schema_is_its_schema_file_with_nullability_and_no_docs(run, table):
    if table not in WRITTEN_HERE:
        pytest.skip(f"no writer of {table!r} in this test")
    ds = datasets.open_dataset(run.table_location(table))
    assert ds is not None, f"{table}.lance was not written"
    expected = arrow_schema(table)
    actual = ds.schema
    assert actual.names == expected.names
    for want, got in zip(expected, actual, strict=True):
        assert got.type == want.type, f"{table}.{want.name}: {got.type} != {want.type}"
        assert got.nullable == want.nullable, f"{table}.{want.name}: nullable {got.nullable}"
        assert b"doc" not in (got.metadata or {}), f"{table}.{want.name}: a doc string in the Lance schema"
        key = PRIMARY_KEY_META.keys() & (want.metadata or {}).keys()
        assert {k: (got.metadata or {}).get(k) for k in key} == {k: want.metadata[k] for k in key}
    assert actual.equals(expected, check_metadata=False)


@pytest.mark.parametrize("table", table_names())
def test_every_field_has_a_doc_in_its_schema_file(table):
    for f in table_spec(table)["fields"]:
        assert field_doc(table, f["name"]).strip(), f"{table}.{f['name']} has no doc"


@pytest.mark.parametrize("table", sorted(WRITTEN_HERE - {"checkpoints", "tokens", "state", "configs"}))
def test_reads_return_the_schema_file_columns(run, table):
    read = run.read_table(table)
    assert read.num_rows > 0
    assert read.schema.equals(arrow_schema(table), check_metadata=False)


def test_history_has_step_recorded_at_then_float_metrics(run):
    h = run.history()
    assert h.schema.field("step").type == pa.int64()
    assert h.schema.field("recorded_at").type == pa.timestamp("us", tz="UTC")
    assert all(h.schema.field(c).type == pa.float64() for c in h.column_names[2:])
