"""sql_runs: which runs a query can read. It may only leave out runs the query's own WHERE excludes."""

from __future__ import annotations

import json

import duckdb
import pytest

import artstore as art
from artstore.read import sql_runs
from artstore.read.sql import versions_read
from tests.test_sql import log_all

RUNS = {("p1", "a"): {"train": {0: [[0.1, 0.2]], 1: [[0.3]]}, "val": {1: [[0.9]]}},
        ("p1", "b"): {"train": {0: [[0.5]]}, "val": {0: [[0.25, 0.75]]}},
        ("p2", "a"): {"train": {5: [[0.0, 1.0]]}}}


def reach(query, params=None):
    tree = duckdb.connect().execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0]
    return sql_runs.reach(json.loads(tree), params)


def test_a_where_that_pins_project_and_model_reaches_those_runs_only():
    assert reach("SELECT * FROM metrics WHERE project = 'p1' AND model = 'a' AND step > 1") == \
        [(frozenset({"p1"}), frozenset({"a"}))]
    assert reach("SELECT * FROM metrics m WHERE m.model IN ('a', 'b') AND 'p1' = project") == \
        [(frozenset({"p1"}), frozenset({"a", "b"}))]
    assert reach("SELECT * FROM trajectories WHERE model = ? AND project = $p", None) is None  # mixed: a parse error
    assert reach("SELECT * FROM trajectories WHERE model = ? AND project = ?", ["a", "p1"]) == \
        [(frozenset({"p1"}), frozenset({"a"}))]
    assert reach("SELECT * FROM trajectories WHERE model = $m", {"m": "b"}) == [(None, frozenset({"b"}))]
    assert reach("SELECT 1") == []


@pytest.mark.parametrize("query", [
    "SELECT * FROM metrics",
    "SELECT * FROM metrics WHERE model = 'a' OR step = 1",
    "SELECT * FROM metrics WHERE NOT (model = 'a')",
    "SELECT * FROM metrics m JOIN runs r USING (project, model) WHERE r.model = 'a'",
    "SELECT * FROM metrics m WHERE metrics.model = 'a'",  # with an alias, `metrics.` is an outer table
    "SELECT * FROM metrics WHERE model = 'a' UNION ALL SELECT * FROM metrics",
    "SELECT * FROM runs WHERE model IN (SELECT model FROM metrics WHERE model = 'a')",
    "SELECT * FROM query_table('metrics') WHERE model = 'a'",
    "SELECT * FROM metrics WHERE model = 'a'::VARCHAR",
    "SELECT * FROM metrics WHERE model = ?",  # no value bound
    "SUMMARIZE metrics",
    "PIVOT metrics ON name IN ('x') USING first(value)",
])
def test_anything_else_reaches_every_run(query):
    assert reach(query) is None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("reach") / "store")
    log_all(path, RUNS)
    return path


DIFFERENTIAL = [
    ("SELECT project, model, step, reward FROM trajectories WHERE project = 'p1' AND model = 'a' ORDER BY ALL", None),
    ("SELECT project, model, count(*) FROM trajectories WHERE model = 'a' GROUP BY ALL ORDER BY ALL", None),
    ("SELECT model, count(*) FROM messages WHERE model IN ('a', 'zzz') AND role = 'tool' GROUP BY ALL ORDER BY 1",
     None),
    ("SELECT count(*) FROM metrics WHERE model = ? AND project = ?", ["b", "p1"]),
    ("SELECT count(*) FROM metrics WHERE model = $m", {"m": "a"}),
    ("SELECT count(*) FROM metrics WHERE model = 'a' OR model = 'b'", None),
    ("SELECT (SELECT count(*) FROM trajectories WHERE model = 'b'), (SELECT count(*) FROM trajectories)", None),
    ("SELECT count(*) FROM runs r WHERE EXISTS (SELECT 1 FROM metrics m WHERE m.model = r.model AND m.model = 'a')",
     None),
    ("SELECT * FROM runs WHERE model = 'a' ORDER BY project", None),
    ("SELECT step FROM history WHERE project = 'p2' AND model = 'a' ORDER BY ALL", None),
    ("SELECT count(*) FROM trajectories t WHERE t.project = 'p1' AND t.model = 'zzz'", None),
    ("SELECT count(*) FROM trajectories WHERE project = 'p1' AND project = 'p2'", None),
    ("SELECT count(*) FROM trajectories WHERE model = 'a/../b'", None),
    ("WITH t AS (SELECT * FROM trajectories WHERE model = 'b') SELECT count(*) FROM t", None),
    ("SELECT count(*) FROM query_table('trajectories')", None),
    ("SELECT count(*) FROM metrics m JOIN logs l USING (project, model, log_id) WHERE l.model = 'a'", None),
]


@pytest.mark.parametrize(("query", "params"), DIFFERENTIAL)
def test_results_are_the_same_as_with_every_run(store, monkeypatch, query, params):
    pruned = art.open_store(store).sql(query, params).to_pylist()
    monkeypatch.setattr(sql_runs, "reach", lambda tree, params: None)
    assert art.open_store(store).sql(query, params).to_pylist() == pruned


def test_a_pinned_query_opens_and_lists_only_its_run(store, monkeypatch):
    s = art.open_store(store)
    s.sql("SELECT 1")
    monkeypatch.setattr(art.Store, "runs", lambda self, projects=None: pytest.fail("listed every run"))
    got = s.sql("SELECT count(*) FROM trajectories WHERE project = 'p2' AND model = 'a'")
    assert got.column(0)[0].as_py() == 2
    assert set(versions_read(got)) == {"p2/a"}
