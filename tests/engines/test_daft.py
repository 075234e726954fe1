"""Daft reads exactly Store.sql's rows, table by table, through the scan plan."""

from __future__ import annotations

import pytest

import artstore as art
from tests.engines.store import TABLES, TAG, tally, truth

daft = pytest.importorskip("daft", reason="Daft is not installed (pip install 'artstore[daft]')")
from artstore.engines import daft as adapter  # noqa: E402


def test_daft_counts_and_sums_equal_sql_table_by_table(engine_store):
    store = art.open_store(engine_store)
    for table in TABLES:
        assert tally(table, adapter.read(store, table).to_arrow()) == truth(store, table), table


def test_daft_as_of_a_tag(engine_store):
    store = art.open_store(engine_store)
    as_of = {"q/c": TAG}
    got = adapter.read(store, "trajectories", as_of=as_of, columns=["reward"]).to_arrow()
    assert tally("trajectories", got) == truth(store, "trajectories", as_of=as_of)


def test_daft_filters_and_aggregates_like_sql(engine_store):
    store = art.open_store(engine_store)
    df = adapter.read(store, "trajectories", columns=["step", "reward"])
    got = df.where(daft.col("step") > 1).groupby("model", "step").agg(
        daft.col("reward").mean().alias("r"), daft.col("reward").count().alias("n")).to_arrow().to_pylist()
    want = store.sql("SELECT model, step, avg(reward) AS r, count(*) AS n FROM trajectories WHERE step > 1 "
                     "GROUP BY ALL").to_pylist()
    key = lambda r: (r["model"], r["step"])  # noqa: E731
    assert [(key(r), round(r["r"], 9), r["n"]) for r in sorted(got, key=key)] == \
        [(key(r), round(r["r"], 9), r["n"]) for r in sorted(want, key=key)]
