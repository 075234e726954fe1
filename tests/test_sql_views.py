"""The SQL views cover exactly the runs a query may read, for any query shape (issue 16, item 2),
and `history` holds Run.history() for any metric names (item 3).

The oracle: the same query on a plain DuckDB connection whose views are fully built tables, read
run by run through the Run API. Every generated query (aliases, column aliases, qualified names,
CTEs, subqueries, table functions, filters on project/model, `projects=`) must answer the same."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artstore as art
from artstore.log.commit import write_log
from artstore.read import sql as sql_mod
from artstore.read import view_datasets as views
from artstore.read.scan import view_schema
from artstore.read.views import VIEWS
from artstore.storage import writes
from tests.test_sql import log_all

RUNS = {("email-search", "agent-001"): {"train": {0: [[0.1, 0.2, 0.3]], 1: [[0.4, 0.5, 0.6]]}},
        ("email-search", "agent-002"): {"train": {0: [[0.7, 0.8]]}, "val": {0: [[0.9, 1.0, 0.0, 0.1]]}},
        ("other", "agent-001"): {"val": {3: [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]}}}
TABLES = ("trajectories", "groups", "metrics", "logs", "checkpoints")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("views") / "store")
    log_all(path, RUNS)
    store = art.open_store(path)
    run = store.run("email-search", "agent-002")
    run.checkpoints_table().begin(0)
    crashed = run.read_table("trajectories")  # a writer died before its logs row: invisible rows
    crashed = crashed.set_column(crashed.schema.get_field_index("write_id"), "write_id",
                                 pa.array(["crashed"] * crashed.num_rows))
    writes.append(run.table_location("trajectories"), crashed)
    return path


def _reference(store: art.Store, projects: list[str] | None) -> duckdb.DuckDBPyConnection:
    """Fully built views: each table of every run (of `projects`), read through the Run API."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    runs = store.runs(projects)
    for name in TABLES:
        schema = views.with_run_columns(view_schema(name))
        parts = []
        for run in runs:
            if name == "logs":
                t = run.logs()
            elif name == "checkpoints":
                t = run.checkpoints()
            else:
                t = run.read_table(name)
            t = t.append_column("project", pa.array([run.project] * t.num_rows, pa.string()))
            t = t.append_column("model", pa.array([run.name] * t.num_rows, pa.string()))
            parts.append(t.select(schema.names).cast(schema))
        con.register(name, pa.concat_tables(parts) if parts else schema.empty_table())
    con.execute(f"CREATE TEMP VIEW messages AS {sql_mod._MESSAGES}")
    con.execute("CREATE TEMP VIEW runs AS " + sql_mod._RUNS.format(base="'x'", middle="'y'"))
    return con


@pytest.fixture(scope="module")
def oracles(path):
    store = art.open_store(path)
    return {key: _reference(store, None if key is None else list(key)) for key in
            (None, ("email-search",), ("other",), ("nope",))}


VIEW = st.sampled_from(["trajectories", "groups", "metrics", "logs", "messages", "checkpoints", "runs"])
REF = st.sampled_from([
    "{v}", "{v} AS t", "temp.main.{v}", "{v} t(model, project)", "(SELECT * FROM {v})",
    "query_table('{v}')", "query_table('{h}' || '{t}')", "(SELECT * FROM {v} WHERE true) s",
])
VALUE = st.sampled_from(["'email-search'", "'other'", "'agent-001'", "'agent-002'", "'nope'"])
COLUMN = st.sampled_from(["project", "model"])


@st.composite
def predicates(draw, depth=0):
    kind = draw(st.sampled_from(["eq", "in", "ne"] + (["and", "or", "not"] if depth < 2 else [])))
    if kind == "eq":
        return f"{draw(COLUMN)} = {draw(VALUE)}"
    if kind == "ne":
        return f"{draw(COLUMN)} <> {draw(VALUE)}"
    if kind == "in":
        return f"{draw(COLUMN)} IN ({', '.join(draw(st.lists(VALUE, min_size=1, max_size=3)))})"
    if kind == "not":
        return f"NOT ({draw(predicates(depth + 1))})"
    return f"({draw(predicates(depth + 1))} {kind.upper()} {draw(predicates(depth + 1))})"


@st.composite
def queries(draw):
    view = draw(VIEW)
    ref = draw(REF).format(v=view, h=view[:3], t=view[3:])
    where = draw(st.none() | predicates())
    body = f"SELECT project, model, count(*) AS n FROM {ref}" + (f" WHERE {where}" if where else "") + \
        " GROUP BY ALL"
    shape = draw(st.sampled_from(["plain", "cte", "union", "join"]))
    if shape == "cte":
        return f"WITH c AS ({body}) SELECT * FROM c"
    if shape == "union":
        return f"{body} UNION ALL SELECT 'all', 'all', count(*) FROM {view}"
    if shape == "join":
        return (f"SELECT b.project, b.model, b.n, r.logs FROM ({body}) b "
                "LEFT JOIN runs r ON r.project = b.project AND r.model = b.model")
    return body


def _answer(run_query) -> tuple[str, object]:
    try:
        return "ok", sorted(map(repr, run_query().to_pylist()))
    except (duckdb.Error, art.SqlError) as e:
        return "error", type(e).__name__


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries(), projects=st.sampled_from([None, ("email-search",), ("other",), ("nope",)]))
def test_every_query_answers_as_on_fully_built_views(path, oracles, query, projects):
    store = art.open_store(path)
    got = _answer(lambda: store.sql(query, projects=None if projects is None else list(projects)))
    want = _answer(lambda: oracles[projects].sql(query).to_arrow_table())
    assert got == want if want[0] == "ok" else got[0] == "error", query


# -- the cases issue 16 found ----------------------------------------------------------------------
def count(store, query, **kw) -> int:
    return store.sql(query, **kw).column(0)[0].as_py()


def test_qualified_names_and_column_aliases_see_every_run(path):
    store = art.open_store(path)
    total = count(store, "SELECT count(*) FROM trajectories")
    assert total == 18
    assert count(store, "SELECT count(*) FROM temp.main.trajectories") == total
    assert count(store, "SELECT count(*) FROM trajectories t(model, project) WHERE project = 'agent-001'") == 12


def test_a_query_after_a_pinned_one_sees_every_run(path):
    store = art.open_store(path)
    assert count(store, "SELECT count(*) FROM trajectories WHERE project = 'other' AND model = 'agent-001'") == 6
    assert count(store, "SELECT count(*) FROM query_table('traj' || 'ectories')") == 18


def test_no_internal_table_is_listed_or_reachable(path):
    store = art.open_store(path)
    store.sql("SELECT count(*) FROM trajectories", projects=["email-search"])
    listed = {r["name"] for r in store.sql("SHOW TABLES").to_pylist()}
    assert listed <= set(VIEWS)
    names = {r["table_name"] for r in store.sql(
        "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() "
        "WHERE NOT internal").to_pylist()}
    assert names <= listed
    for name in ("_r0_trajectories", "_r2_trajectories", "_runs", "_empty_trajectories"):
        with pytest.raises(art.SqlError):
            store.sql(f"SELECT count(*) FROM {name}", projects=["email-search"])
    assert count(store, "SELECT count(*) FROM trajectories", projects=["email-search"]) == 12


# -- history -----------------------------------------------------------------------------------------
def test_history_holds_run_history_for_any_metric_names(tmp_path):
    names = ["val/Loss", "val/loss", "model", "Step", "project", "recorded_at", "step", "val/loss_1", "ünï/çødé"]
    run = art.open_store(tmp_path).run("p", "m")
    for i in range(3):
        write_log(run.location, None, split="val", step=i, metrics_as_given=True,
                  metrics={n: float(10 * i + j) for j, n in enumerate(names) if (i + j) % 3})
    want = run.history()
    assert want.column_names[2:] != [] and set(want.column_names[2:]) == set(names)
    got = art.open_store(tmp_path).sql("SELECT * FROM history")
    assert got.column_names[:4] == ["project", "model", "step", "recorded_at"]
    assert got.num_columns == want.num_columns + 2
    for i in range(want.num_columns):  # same values, column by column, in the same order
        assert got.column(i + 2).to_pylist() == want.column(i).to_pylist(), want.column_names[i]
    assert got["model"].to_pylist() == ["m"] * 3  # the run's name; the metric `model` is column `model_1`
    assert got["model_1"].to_pylist() == want.column(want.column_names.index("model")).to_pylist()
    assert len({c.lower() for c in got.column_names}) == got.num_columns  # each name reachable in DuckDB


def test_a_fresh_stores_first_query_may_name_history_metric_columns(tmp_path):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step in range(2):
        model.log_sync(None, split="val", step=step, metrics={"Loss": float(step), "loss": 10.0 + step})
    model.flush()
    # a Store's views bind no metric column before its first query: DuckDB could not bind these
    got = art.open_store(tmp_path).sql('SELECT step, "val/Loss" AS a, "val/loss_1" AS b FROM history '
                                       'WHERE "val/loss_1" > 10 ORDER BY step')
    assert got.to_pylist() == [{"step": 1, "a": 1.0, "b": 11.0}]
    store = art.open_store(tmp_path)
    assert store.sql("SELECT max(\"val/Loss\") AS m FROM history")["m"].to_pylist() == [1.0]
    model.log_sync(None, split="val", step=2, metrics={"new": 1.0})
    model.flush()
    assert store.sql('SELECT step FROM history WHERE "val/new" = 1')["step"].to_pylist() == [2]  # a name new since
    with pytest.raises(art.SqlError, match="val/none"):  # a name no run has stays an error
        store.sql('SELECT "val/none" FROM history')


def test_a_filter_on_history_keeps_only_the_matching_rows(tmp_path):
    for name in ("a", "b"):
        model = art.Model(name=name, project="p", base_path=str(tmp_path), report_metrics=[])
        for step in range(4):
            model.log_sync(None, split="val", step=step, metrics={"x": float(step)})
        model.flush()
    store = art.open_store(tmp_path)
    store.sql("SELECT * FROM history")  # every column bound: DuckDB pushes the filters below down
    for where, want in [("step = 1", [("a", 1), ("b", 1)]), ('"val/x" >= 2 AND step < 3', [("a", 2), ("b", 2)]),
                        ("step IN (0, 3) AND model = 'b'", [("b", 0), ("b", 3)]), ('"val/x" IS NULL', [])]:
        got = store.sql(f"SELECT model, step FROM history WHERE {where} ORDER BY model, step")
        assert [(r["model"], r["step"]) for r in got.to_pylist()] == want, where
        count = store.sql(f"SELECT count(*) AS n FROM history WHERE {where}")["n"].to_pylist()
        assert count == [len(want)], where


def test_history_of_many_metric_names_takes_linear_time(tmp_path):
    run = art.open_store(tmp_path).run("p", "m")
    names = [f"val/metric_{i}" for i in range(3000)]
    for step in range(3):
        write_log(run.location, None, split="val", step=step, metrics_as_given=True,
                  metrics={n: float(step) for n in names})
    got = art.open_store(tmp_path).sql("SELECT * FROM history")  # past 15 minutes before (quadratic)
    assert got.num_rows == 3 and got.num_columns == 4 + 3000
    assert got["val/metric_2999"].to_pylist() == [0.0, 1.0, 2.0]


# -- a filter naming project/model and stored columns: stored columns read first, then the rows -----
MIXED = [
    "SELECT * EXCLUDE (recorded_at) FROM trajectories WHERE project = 'email-search' AND model = 'agent-002' AND step = 0",
    "SELECT reward, split, project FROM trajectories WHERE project = 'email-search' AND split = 'val'",
    "SELECT * EXCLUDE (recorded_at) FROM groups WHERE (project = 'other' OR step = 1) AND split <> 'x'",
    "SELECT name, value, model FROM metrics WHERE model IN ('agent-001', 'nope') AND step >= 1",
    "SELECT count(*), sum(reward) FROM trajectories WHERE project = 'email-search' AND reward > 0.35",
]


@pytest.mark.parametrize("share", [0.0, 1.0], ids=["scan-whole", "fetch-matches"])
@pytest.mark.parametrize("query", MIXED)
def test_a_filter_on_run_and_stored_columns_answers_the_same_however_rows_are_fetched(
        path, oracles, monkeypatch, query, share):
    monkeypatch.setattr(views, "FETCH_AT_MOST", share)
    got = _answer(lambda: art.open_store(path).sql(query))
    want = _answer(lambda: oracles[None].sql(query).to_arrow_table())
    assert want[0] == "ok" and got == want, query
