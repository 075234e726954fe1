"""A cross-run query at the latest version reads small runs from the store's pool
(`artstore.log.run_pool`, `artstore.read.pool_scan`) only while a run's copy is of its current logs
version; any other run is read from its own tables, so what a query sees is exactly what it saw
without the pool (each log all or nothing, in commit order).

Real runs on disk; the tests note which runs' own tables a query opened (the real
`datasets.arrow_dataset`, wrapped).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import artstore as art
from artstore.log import fold, run_pool, run_stats
from artstore.read import pool_scan, view_datasets
from artstore.read.query import Query
from artstore.read.scan import view_schema
from artstore.read.sql import versions_read
from artstore.storage import datasets, handles, scans, writes
from tests.test_sql_registry_counts import _expected, _log, two_folded_runs

SQL = "SELECT model, step, count(*) AS n, sum(reward) AS r FROM trajectories GROUP BY ALL ORDER BY ALL"


@pytest.fixture(autouse=True)
def _no_background_refresh(monkeypatch):
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 3600.0)  # the tests decide when the registry is refreshed


@pytest.fixture
def opened(monkeypatch):
    """The runs ("project/model") whose own trajectories table a query opened."""
    seen: list[str] = []
    real = datasets.arrow_dataset

    def noting(loc, *args, **kwargs):
        if loc.uri.rstrip("/").endswith("/trajectories.lance") and f"/{run_pool.NAME}/" not in loc.uri:
            seen.append("/".join(loc.uri.rstrip("/").split("/")[-4:-1:2]))
        return real(loc, *args, **kwargs)

    monkeypatch.setattr(datasets, "arrow_dataset", noting)
    return seen


@pytest.fixture
def store(tmp_path):
    return two_folded_runs(tmp_path)


def _copies(store: art.Store, table: str = "trajectories") -> dict[str, int]:
    t = scans.scan(run_pool.location(store.location, table), columns=["model", run_pool.GENERATION])
    found: dict[str, set] = {}
    for m, g in zip(t["model"].to_pylist(), t[run_pool.GENERATION].to_pylist(), strict=True):
        found.setdefault(m, set()).add(g)
    return {m: len(g) for m, g in found.items()}


def test_small_runs_are_read_from_the_pool_without_opening_their_tables(store, opened):
    result = art.open_store(store.uri).sql(SQL)
    assert result.to_pylist() == _expected({"a": 2, "b": 2})
    assert opened == []
    read = versions_read(result)
    assert set(read) == {"p/a", "p/b"} and set(read["p/a"]) == {"logs", "trajectories"}
    # the versions named read the same rows again, from the runs' own tables
    assert art.open_store(store.uri).sql(SQL, as_of=read).to_pylist() == _expected({"a": 2, "b": 2})
    assert sorted(opened) == ["p/a", "p/b"]


def test_every_log_written_table_is_copied_once_per_run(store):
    assert store.refresh_run_stats() == 2  # a second refresh replaces each copy
    for table in run_pool.TABLES:
        assert _copies(store, table) == {"a": 1, "b": 1}
    for view in run_pool.TABLES:  # the pool's answer, then the runs' own tables' at the versions it names
        query = f"SELECT model, count(*) AS n, count(DISTINCT log_id) AS logs FROM {view} GROUP BY ALL ORDER BY ALL"
        pooled = art.open_store(store.uri).sql(query)
        assert set(versions_read(pooled)["p/a"]) == {"logs", view}
        assert pooled.to_pylist() == art.open_store(store.uri).sql(query, as_of=versions_read(pooled)).to_pylist()
        assert [r["logs"] for r in pooled.to_pylist()] == [2, 2]


def test_a_log_after_the_copy_is_seen_and_the_stale_copy_is_not_used(store, opened):
    model = art.Model(name="a", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)  # not refreshed: the pool holds the copy of an older logs version
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 3, "b": 2})
    assert opened == ["p/a"]


def test_rows_of_a_crashed_writer_are_not_seen_through_the_pool(store, opened):
    run = store.run("p", "a")
    orphans = run.read_table("trajectories").slice(0, 2)
    orphans = orphans.set_column(orphans.schema.get_field_index("write_id"), "write_id", pa.array(["crashed"] * 2))
    writes.append(run.table_location("trajectories"), orphans)  # rows no committed log names
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert store.refresh_run_stats(["p"]) == 2  # its counts no longer prove the table: no new copy
    assert _copies(store) == {"a": 1, "b": 1}  # a's stays: made before the orphans, of the same logs version
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert opened == []  # the copy holds exactly the rows that version's logs name
    writes.delete_where(run_pool.location(store.location, "trajectories"), "model = 'a'")
    assert store.refresh_run_stats(["p"]) == 2  # a table holding rows no log names is never copied
    assert _copies(store) == {"b": 1}
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert opened == ["p/a"]


def test_a_log_not_folded_yet_is_read_from_the_journal_not_the_stale_copy(store, opened):
    model = art.Model(name="b", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)  # in the journal only
    assert store.refresh_run_stats(["p"]) == 2  # not folded up to its last log: no new copy
    assert _copies(store) == {"a": 1, "b": 1}
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 3})
    assert opened == ["p/b"]


def test_a_run_grown_past_small_has_its_copy_removed(store, opened, monkeypatch):
    monkeypatch.setattr(run_pool, "MAX_ROWS", 3)  # each run's trajectories hold 4 rows
    assert store.refresh_run_stats(["p"]) == 2
    assert _copies(store) == {}
    assert _copies(store, "groups") == {"a": 1, "b": 1}  # 2 rows each: still small
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert sorted(opened) == ["p/a", "p/b"]


def test_a_copy_of_another_incarnation_of_the_same_version_is_not_used(store, opened):
    # a run deleted and logged again reaches the same version numbers: its manifest's mtime differs
    loc = store.run("p", "b").table_location("logs")
    manifest = handles.manifest(loc, datasets.open_dataset(loc).version).uri
    st = os.stat(manifest)
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert opened == ["p/b"]


def test_a_query_as_of_a_version_never_reads_the_pool(store, opened):
    version = store.run("p", "a").versions()[-1]["version"]
    got = art.open_store(store.uri).sql(SQL, as_of=version)
    assert got.to_pylist() == _expected({"a": 2, "b": 2})
    assert sorted(opened) == ["p/a", "p/b"]


def test_a_filter_on_project_and_model_is_answered_from_the_pool(store, opened):
    got = art.open_store(store.uri).sql(
        "SELECT model, step, count(*) AS n FROM trajectories WHERE model = 'b' AND reward >= 1 GROUP BY ALL")
    assert got.to_pylist() == [{"model": "b", "step": 1, "n": 2}]
    assert opened == []


def test_a_log_landing_mid_query_is_in_no_view_of_a_pooled_run(store):
    # run a's trajectories come from the pool; its groups (copy removed) from its own tables,
    # opened after a new log landed: they are read at the pooled logs version all the same
    writes.delete_where(run_pool.location(store.location, "groups"), "project = 'p' AND model = 'a'")
    query = Query(art.open_store(store.uri), None)
    views = {t: view_datasets.ViewDataset(t, view_schema(t), lambda: query) for t in ("trajectories", "groups")}
    trajectories = views["trajectories"].to_table(columns=["model"])
    assert query.versions()["p/a"].keys() == {"logs", "trajectories"}  # from the pool
    model = art.Model(name="a", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)
    fold.fold(model.run.location)
    groups = views["groups"].to_table(columns=["model"])
    query.close()
    assert trajectories["model"].to_pylist().count("a") == 4 and groups["model"].to_pylist().count("a") == 2
    assert art.open_store(store.uri).sql(  # the next query sees the new log in every view
        "SELECT (SELECT count(*) FROM trajectories WHERE model = 'a') AS t, "
        "(SELECT count(*) FROM groups WHERE model = 'a') AS g").to_pylist() == [{"t": 6, "g": 3}]


def test_filters_on_times_lists_and_functions_answer_as_from_the_runs_own_tables(store, opened):
    queries = ["SELECT model, count(*) AS n FROM trajectories WHERE recorded_at > TIMESTAMP '2020-01-01' "
               "AND len(message_role) >= 1 GROUP BY ALL ORDER BY ALL",
               "SELECT model, count(*) AS n FROM trajectories WHERE starts_with(message_content[1], '1.') "
               "OR model = 'b' GROUP BY ALL ORDER BY ALL",
               "SELECT count(*) AS n FROM metrics WHERE name LIKE '%reward%' AND value IS NOT NULL"]
    for query in queries:
        pooled = art.open_store(store.uri).sql(query)
        assert opened == [] and versions_read(pooled)  # from the pool: no run's own trajectories opened
        own = art.open_store(store.uri).sql(query, as_of=versions_read(pooled))  # each run's own tables
        assert pooled.to_pylist() == own.to_pylist() and pooled.num_rows
        opened.clear()


def test_a_run_whose_own_logs_a_query_pinned_is_not_read_from_the_pool(store):
    # its stamp was taken, then a log landed, then its own tables were pinned (at the new log):
    # its other views must not come from the pool copy of the older version
    query = Query(art.open_store(store.uri), None)
    assert query.pool_stamp("p/a") is not None
    model = art.Model(name="a", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)
    fold.fold(model.run.location)
    assert query.snapshot("p/a").dataset("logs") is not None  # pinned at the new log
    found = pool_scan.share(query, "groups", ["p/a", "p/b"])
    query.close()
    assert found is not None and found.keys == {"p/b"}
