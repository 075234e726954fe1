"""Store.sql: each view against what was logged, visibility, time travel, read-only, params, pushdown."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from openai.types.chat.chat_completion import Choice

import artstore as art
from artstore.log import fold
from artstore.read import pool_scan, scan, small_tables
from artstore.read import sql as sql_mod
from artstore.read.sql import versions_read
from artstore.storage import datasets, writes

REWARDS = {  # (project, model) -> split -> step -> rewards per group
    ("p1", "a"): {"train": {0: [[0.1, 0.3], [0.5, 0.7]], 1: [[0.2, 0.4], [0.6, 1.0]]}, "val": {1: [[0.9, 0.8]]}},
    ("p1", "b"): {"train": {0: [[1.0, 0.0]]}, "val": {0: [[0.25, 0.75]], 2: [[0.5, 0.5]]}},
    ("p2", "c"): {"train": {5: [[0.0, 1.0, 0.5]]}},
}


def rollout(reward: float, i: int, fail: bool = False) -> art.Trajectory:
    """system, user, a tool call (search or read), its result (an ERROR when `fail`), the answer."""
    tool = "search_inbox" if i % 2 == 0 else "read_email"
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant."},
            {"role": "user", "content": f"question {i}"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{i}", "type": "function",
                                "function": {"name": tool, "arguments": f'{{"q": {i}}}'}}]}),
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "ERROR: timeout" if fail else "[]"},
            Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": f"answer {i}"}),
        ],
        reward=reward, metrics={"correct": reward > 0.5}, metadata={"i": i},
    )


def log_all(base_path: str, rewards=REWARDS) -> None:
    i = 0
    for (project, name), splits in rewards.items():
        model = art.Model(name=name, project=project, base_path=base_path, report_metrics=[])
        for split, steps in splits.items():
            for step, groups in steps.items():
                gs = []
                for g in groups:
                    trajs = []
                    for r in g:
                        trajs.append(rollout(r, i, fail=i % 3 == 0))
                        i += 1
                    gs.append(art.TrajectoryGroup(trajs, metadata={"n": len(g)}))
                model.log_sync(gs, split=split, step=step, metrics={"extra": float(step)} if name == "b" else None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sql") / "store")
    log_all(path)
    store = art.open_store(path)
    for run in store.runs():  # rows in the data tables (tests/test_journal.py reads them unfolded)
        fold.fold(run.location)
    return store


def rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


# -- each view, against what was logged ------------------------------------------------------
def test_trajectories_view_holds_the_logged_rewards(store):
    got = rows(store.sql("SELECT project, model, split, step, count(*), avg(reward) FROM trajectories "
                         "GROUP BY ALL ORDER BY ALL"))
    want = sorted((p, m, split, step, sum(map(len, gs)), statistics.fmean([r for g in gs for r in g]))
                  for (p, m), splits in REWARDS.items() for split, steps in splits.items() for step, gs in steps.items())
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert [g[5] for g in got] == pytest.approx([w[5] for w in want])


def test_groups_view_has_one_row_per_logged_group(store):
    got = rows(store.sql("SELECT model, split, step, group_index, num_trajectories, metadata FROM groups ORDER BY ALL"))
    want = sorted((m, split, step, gi, len(g), f'{{"n":{len(g)}}}') for (_, m), splits in REWARDS.items()
                  for split, steps in splits.items() for step, gs in steps.items() for gi, g in enumerate(gs))
    assert got == want


def test_messages_view_has_one_row_per_message_with_tool_names(store):
    n = sum(len(g) for splits in REWARDS.values() for steps in splits.values() for gs in steps.values() for g in gs)
    got = dict(rows(store.sql("SELECT role, count(*) FROM messages GROUP BY role")))
    assert got == {"system": n, "user": n, "assistant": 2 * n, "tool": n}
    tool = store.sql("SELECT trajectory_id, message_index, content, tool_call_id, tool_name, trainable "
                     "FROM messages WHERE role = 'tool' ORDER BY trajectory_id").to_pylist()
    assert {t["message_index"] for t in tool} == {3}
    assert {t["tool_name"] for t in tool} == {"search_inbox", "read_email"}
    assert not any(t["trainable"] for t in tool)
    fails = store.sql("SELECT count(*) FILTER (WHERE starts_with(content, 'ERROR')) FROM messages WHERE role = 'tool'")
    assert fails.column(0)[0].as_py() == (n + 2) // 3  # every third rollout, from the first, failed
    calls = store.sql("SELECT tool_names, tool_calls[1].arguments AS args, trainable, finish_reason FROM messages "
                      "WHERE role = 'assistant' AND message_index = 2 LIMIT 1").to_pylist()[0]
    assert calls["tool_names"][0] in {"search_inbox", "read_email"} and calls["args"].startswith('{"q":')
    assert calls["trainable"] is True and calls["finish_reason"] == "tool_calls"


def test_metrics_view_matches_run_metrics(store):
    for (p, m) in REWARDS:
        want = store.run(p, m).metrics()
        got = store.sql("SELECT log_id, step, split, name, value, recorded_at FROM metrics WHERE project = ? AND model = ?",
                        [p, m])
        assert sorted(rows(got)) == sorted(rows(want))
    val = rows(store.sql("SELECT step, value FROM metrics WHERE model = 'b' AND name = 'val/reward' ORDER BY step"))
    assert val == [(0, pytest.approx(0.5)), (2, pytest.approx(0.5))]


def test_history_view_is_run_history_with_metric_columns_across_runs(store):
    h = store.sql("SELECT * FROM history")
    assert h.column_names[:4] == ["project", "model", "step", "recorded_at"]
    assert "val/extra" in h.column_names  # only run b logged it
    for (p, m) in REWARDS:
        want = store.run(p, m).history()
        got = store.sql("SELECT * EXCLUDE (project, model) FROM history WHERE project = $p AND model = $m",
                        {"p": p, "m": m})
        assert got.num_rows == want.num_rows
        for col in want.column_names:
            assert got[col].to_pylist() == pytest.approx(want[col].to_pylist()) if col != "recorded_at" else \
                got[col].to_pylist() == want[col].to_pylist()
        others = set(got.column_names) - set(want.column_names)
        assert all(got[c].null_count == got.num_rows for c in others)


def test_runs_and_logs_views(store):
    got = store.sql("SELECT project, model, logs, latest_step, trajectories, groups FROM runs ORDER BY ALL").to_pylist()
    assert [(r["project"], r["model"]) for r in got] == list(REWARDS)
    for r in got:
        splits = REWARDS[(r["project"], r["model"])]
        assert r["logs"] == sum(len(steps) for steps in splits.values())
        assert r["latest_step"] == max(s for steps in splits.values() for s in steps)
        assert r["trajectories"] == sum(len(g) for steps in splits.values() for gs in steps.values() for g in gs)
        assert r["groups"] == sum(len(gs) for steps in splits.values() for gs in steps.values())
    logs = store.sql("SELECT model, split, step, num_trajectories FROM logs WHERE project = 'p1' ORDER BY ALL")
    assert rows(logs)[0] == ("a", "train", 0, 4)


def test_checkpoints_view(tmp_path):
    log_all(str(tmp_path), {("p", "m"): {"train": {0: [[0.5]]}}})
    s = art.open_store(tmp_path)
    cps = s.run("p", "m").checkpoints_table()
    cps.begin(1)
    cps.mark_ready(1, size_bytes=10)
    cps.begin(2)
    got = rows(s.sql("SELECT project, model, step, status, size_bytes FROM checkpoints ORDER BY step"))
    assert got == [("p", "m", 1, "ready", 10), ("p", "m", 2, "saving", None)]


def test_tokens_view_appears_when_a_run_has_a_tokens_table(tmp_path):
    log_all(str(tmp_path), {("p", "m"): {"train": {0: [[0.5]]}}, ("p", "n"): {"train": {0: [[0.5]]}}})
    s = art.open_store(tmp_path)
    with pytest.raises(art.SqlError, match="tokens"):
        s.sql("SELECT * FROM tokens")
    tokens = pa.table({"trajectory_id": ["t0", "t1"], "input_ids": [[1, 2, 3], [4, 5]], "advantage": [0.5, -0.5]})
    writes.append(s.run("p", "n").table_location("tokens"), tokens)
    got = rows(s.sql("SELECT project, model, trajectory_id, len(input_ids), advantage FROM tokens ORDER BY ALL"))
    assert got == [("p", "n", "t0", 3, 0.5), ("p", "n", "t1", 2, -0.5)]


def test_views_exist_and_are_empty_in_an_empty_store(tmp_path):
    s = art.open_store(tmp_path / "nothing")
    for view in ("runs", "logs", "trajectories", "groups", "messages", "metrics", "history", "checkpoints"):
        t = s.sql(f"SELECT * FROM {view}")
        assert t.num_rows == 0 and t.column_names[:2] == ["project", "model"]


def test_a_stores_catalog_goes_with_the_store(tmp_path):
    import gc
    import weakref

    log_all(str(tmp_path), {("p", "m"): {"train": {0: [[0.5]]}}})
    s = art.open_store(tmp_path)
    assert s.sql("SELECT count(*) FROM trajectories").column(0)[0].as_py() == 1
    assert s in sql_mod._catalogs
    before, gone = len(sql_mod._catalogs), weakref.ref(s)
    del s
    gc.collect()
    # other tests' stores may be collected now too: count only that this one's catalog went
    assert gone() is None and len(sql_mod._catalogs) <= before - 1


def test_projects_limits_the_runs(store):
    assert rows(store.sql("SELECT DISTINCT project FROM trajectories", projects=["p2"])) == [("p2",)]
    assert store.sql("SELECT count(*) FROM runs", projects=["nope"]).column(0)[0].as_py() == 0


# -- visibility and time travel ------------------------------------------------------------------
def test_rows_of_an_uncommitted_log_are_invisible(tmp_path):
    log_all(str(tmp_path), {("p", "m"): {"train": {0: [[0.5, 0.5]]}}})
    s = art.open_store(tmp_path)
    run = s.run("p", "m")
    orphan = run.read_table("trajectories").set_column(1, "write_id", pa.array(["crashed"] * 2))
    writes.append(run.table_location("trajectories"), orphan)  # a writer died before its logs row
    assert s.sql("SELECT count(*) FROM trajectories").column(0)[0].as_py() == 2
    assert s.sql("SELECT count(*) FROM messages").column(0)[0].as_py() == 10


def test_new_logs_and_a_recreated_run_are_seen_by_the_next_query(tmp_path):
    import shutil

    path = str(tmp_path)
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    model.log_sync([art.TrajectoryGroup([rollout(0.5, 0)])], split="val", step=0)
    s = art.open_store(path)
    q = "SELECT step, reward FROM trajectories ORDER BY step"
    assert rows(s.sql(q)) == [(0, 0.5)]
    model.log_sync([art.TrajectoryGroup([rollout(0.25, 1)])], split="val", step=1)
    assert rows(s.sql(q)) == [(0, 0.5), (1, 0.25)]
    shutil.rmtree(tmp_path / "p")  # the run is deleted, then logged again under the same name
    model.log_sync([art.TrajectoryGroup([rollout(0.75, 2)])], split="val", step=7)
    assert rows(s.sql(q)) == [(7, 0.75)]


def test_as_of_a_version_sees_exactly_that_versions_data(tmp_path):
    path = str(tmp_path)
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    for step in range(3):
        model.log_sync([art.TrajectoryGroup([rollout(0.1 * step, step)])], split="train", step=step)
    run = art.open_store(path).run("p", "m")
    versions = [v["version"] for v in run.versions()]
    s = art.open_store(path)
    for v in versions:
        want = run.trajectories(as_of=v)
        got = s.sql("SELECT step, reward, trajectory_id FROM trajectories ORDER BY step", as_of=v)
        assert rows(got) == rows(want.select(["step", "reward", "trajectory_id"]).sort_by("step"))
        assert versions_read(got)["p/m"]["logs"] == v
    assert s.sql("SELECT count(*) FROM metrics", as_of=versions[1]).column(0)[0].as_py() == \
        run.metrics(as_of=versions[1]).num_rows


def test_as_of_tag_datetime_and_per_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSTORE_COMMIT", "sync")  # sync: the versions named below are one per log
    path = str(tmp_path)
    a = art.Model(name="a", project="p", base_path=path, report_metrics=[])
    b = art.Model(name="b", project="p", base_path=path, report_metrics=[])
    a.log_sync([art.TrajectoryGroup([rollout(1.0, 0)])], split="train", step=0)
    b.log_sync([art.TrajectoryGroup([rollout(1.0, 1)])], split="train", step=0)
    s = art.open_store(path)
    s.run("p", "a").tag("first")
    between = datetime.now(UTC)
    a.log_sync([art.TrajectoryGroup([rollout(0.0, 2)])], split="train", step=1)
    b.log_sync([art.TrajectoryGroup([rollout(0.0, 3)])], split="train", step=1)
    q = "SELECT model, max(step) FROM trajectories GROUP BY model ORDER BY model"
    assert rows(s.sql(q)) == [("a", 1), ("b", 1)]
    assert rows(s.sql(q, as_of=between)) == [("a", 0), ("b", 0)]
    assert rows(s.sql(q, as_of={"p/a": "first"})) == [("a", 0), ("b", 1)]
    assert rows(s.sql(q, as_of=datetime(2000, 1, 1, tzinfo=UTC))) == []  # before any run existed
    with pytest.raises(art.VersionNotFoundError):
        s.sql(q, as_of="no-such-tag")
    with pytest.raises(art.RunNotFoundError):
        s.sql(q, as_of={"p/zzz": 1})


def test_versions_read_reproduce_a_result_after_more_logs(tmp_path):
    path = str(tmp_path)
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    model.log_sync([art.TrajectoryGroup([rollout(0.5, 0)])], split="val", step=0)
    s = art.open_store(path)
    s.run("p", "m").checkpoints_table().begin(0)
    q = "SELECT (SELECT count(*) FROM trajectories) AS t, (SELECT count(*) FROM checkpoints) AS c"
    first = s.sql(q)
    # the one log is not folded yet: its rows come from the logs table (artstore.log.journal)
    assert set(versions_read(first)["p/m"]) == {"logs", "checkpoints"}
    model.log_sync([art.TrajectoryGroup([rollout(0.7, 1)])], split="val", step=1)
    s.run("p", "m").checkpoints_table().begin(1)
    assert rows(s.sql(q)) == [(2, 2)]
    again = s.sql(q, as_of=versions_read(first))
    assert rows(again) == rows(first) == [(1, 1)]


def test_checkpoints_as_of_a_logs_version_are_those_of_that_time(tmp_path):
    path = str(tmp_path)
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    s = art.open_store(path)
    cps = s.run("p", "m").checkpoints_table()
    model.log_sync([art.TrajectoryGroup([rollout(0.5, 0)])], split="val", step=0)
    cps.begin(0)
    cps.mark_ready(0, size_bytes=1)
    model.log_sync([art.TrajectoryGroup([rollout(0.5, 1)])], split="val", step=1)
    v = s.run("p", "m").versions()[-1]["version"]
    cps.mark_deleted({0: "pruned"})
    assert rows(s.sql("SELECT step, status FROM checkpoints")) == [(0, "deleted")]
    assert rows(s.sql("SELECT step, status FROM checkpoints", as_of=v)) == [(0, "ready")]


# -- read-only -----------------------------------------------------------------------------------
REFUSED = [
    "CREATE TABLE x AS SELECT 1",
    "CREATE OR REPLACE VIEW trajectories AS SELECT 1",
    "CREATE MACRO m(a) AS a",
    "INSERT INTO trajectories VALUES (1)",
    "UPDATE trajectories SET reward = 1",
    "DELETE FROM trajectories",
    "DROP VIEW trajectories",
    "ALTER VIEW trajectories RENAME TO t",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/db'",
    "ATTACH '{tmp}/x.duckdb' AS x",
    "DETACH x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET threads = 1",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "PREPARE q AS SELECT 1",
    "USE memory",
    "PIVOT metrics ON name USING first(value)",
    "SELECT 1; DROP VIEW trajectories",
    "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_parquet('{tmp}/*.parquet')",
    "SELECT * FROM read_json('{tmp}/x.json')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM 'https://example.com/data.parquet'",
    "SELECT * FROM read_parquet('s3://bucket/key.parquet')",
    "SELECT * FROM sqlite_scan('{tmp}/x.db', 't')",
    "SELECT * FROM parquet_metadata('{tmp}/x.parquet')",
    "SELECT * FROM query('CREATE TABLE z AS SELECT 1')",
    "SELECT * FROM secret_python_variable",
    "",
    "   ",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_writes_and_outside_reads_are_refused(store, tmp_path, statement):
    secret_python_variable = pa.table({"x": [1]})  # noqa: F841 - a query must not reach it
    before = store.sql("SELECT count(*) FROM trajectories").column(0)[0].as_py()
    assert before > 0
    with pytest.raises(art.SqlError):
        store.sql(statement.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing written outside
    assert store.sql("SELECT count(*) FROM trajectories").column(0)[0].as_py() == before


def test_a_sql_error_is_one_clear_line(store):
    with pytest.raises(art.SqlError) as e:
        store.sql("SELECT nope FROM trajectories")
    assert "nope" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(art.SqlError, match="read-only"):
        store.sql("DELETE FROM trajectories")
    assert isinstance(e.value, art.ArtstoreError)


def test_explain_of_a_select_is_allowed(store):
    plan = store.sql("EXPLAIN SELECT avg(reward) FROM trajectories")
    assert "PYTHON_ARROW_SCAN" in "".join(plan.column(1).to_pylist())


# -- parameters ----------------------------------------------------------------------------------
def test_parameters_are_bound_not_formatted(store):
    q = "SELECT count(*) FROM trajectories WHERE model = ? AND step = ?"
    assert store.sql(q, ["a", 0]).column(0)[0].as_py() == 4
    assert store.sql(q, ("a", 0)).column(0)[0].as_py() == 4
    named = "SELECT count(*) FROM trajectories WHERE model = $m AND split = $s"
    assert store.sql(named, {"m": "b", "s": "val"}).column(0)[0].as_py() == 4
    assert store.sql(q, ["a' OR '1'='1", 0]).column(0)[0].as_py() == 0
    assert store.sql("SELECT ? AS x", ["'; DROP VIEW trajectories; --"]).column(0)[0].as_py() == \
        "'; DROP VIEW trajectories; --"
    with pytest.raises(art.SqlError):
        store.sql(q, ["a"])  # one too few
    with pytest.raises(art.ValidationError, match="params"):
        store.sql(q, "a")


# -- pushdown ------------------------------------------------------------------------------------
TAKE = "(a take of every row: the filter applied in Arrow)"


class _Recorder:
    """What a Lance dataset was asked to scan (or take)."""

    def __init__(self, ds, where, scans):
        self._ds, self._where, self._scans = ds, where, scans

    def scanner(self, columns=None, filter=None, **kw):
        self._scans.append((self._where, list(columns), None if filter is None else str(filter)))
        return self._ds.scanner(columns=columns, filter=filter, **kw)

    def take(self, indices, columns=None, **kw):  # a small table's read (`small_tables`)
        self._scans.append((self._where, list(columns), TAKE))
        return self._ds.take(indices, columns=columns, **kw)

    def __getattr__(self, name):
        return getattr(self._ds, name)


@pytest.fixture
def scans(monkeypatch):
    """Every table a query opened, as ('opened', run/table), and every scan DuckDB asked of Lance, as
    (run/table, columns, filter)."""
    recorded: list[tuple] = []
    real = datasets.arrow_dataset
    small_tables.clear()  # read again, not taken from what earlier queries kept

    def spy(loc, version=None, asof=None):
        found = real(loc, version=version, asof=asof)
        parts = loc.uri.rstrip("/").split("/")
        where = f"{parts[-4]}/{parts[-2]}/{parts[-1][:-6]}"
        recorded.append(("opened", where))
        return None if found is None else (_Recorder(found[0], where, recorded), found[1])

    monkeypatch.setattr(scan.datasets, "arrow_dataset", spy)
    monkeypatch.setattr(pool_scan, "share", lambda *args: None)  # each run's own tables: what these tests watch
    return recorded


def test_projection_and_filters_reach_lance_and_other_runs_are_not_opened(store, scans):
    got = store.sql("SELECT avg(reward) FROM trajectories WHERE project = 'p1' AND model = 'a' AND step = 1 "
                    "AND split = 'train'")
    assert got.column(0)[0].as_py() == pytest.approx(0.55)
    assert {s[1] for s in scans if s[0] == "opened"} == {"p1/a/logs", "p1/a/trajectories"}
    # the filter's stored columns may be read first alone (`view_datasets.FETCH_AT_MOST`); no scan
    # reads a column the query does not use
    read = [set(s[1]) for s in scans if s[0] == "p1/a/trajectories"]
    assert read and all(c <= {"write_id", "reward", "step", "split"} for c in read)
    assert any("reward" in c for c in read) or len(read) == 1  # reward: scanned, or fetched by `take`
    # a filter naming project or model is applied in Arrow (Lance's tables have no such columns)
    scans.clear()
    got = store.sql("SELECT avg(reward) FROM trajectories WHERE step = 1 AND split = 'train'", projects=["p1"])
    assert got.column(0)[0].as_py() == pytest.approx((0.55 * 4) / 4)
    for _, columns, filt in [s for s in scans if s[0] != "opened"]:
        if filt == TAKE:  # a small table: read whole (the columns the query and its filter use), filtered in Arrow
            assert set(columns) <= {"write_id", "reward", "step", "split"}
        else:
            assert "step" in filt and "1" in filt and "split" in filt and "train" in filt


def test_messages_query_reads_only_the_columns_it_needs(store, scans):
    store.sql("SELECT step, count(*) FROM messages WHERE role = 'tool' AND model = 'b' GROUP BY step")
    ((_, columns, filt),) = [s for s in scans if s[0] == "p1/b/trajectories"]
    assert set(columns) == {"step", "message_role"} and filt in (None, TAKE)  # no orphan rows: no write_id read
    assert all(s[1].startswith("p1/b/") for s in scans if s[0] == "opened")


def test_messages_view_reads_only_the_message_fields_a_query_uses(store, scans):
    got = store.sql("SELECT count(*) FROM messages WHERE role = 'tool' AND starts_with(content, 'ERROR') "
                    "AND project = 'p2'")
    assert got.column(0)[0].as_py() == 1  # p2/c holds rollouts 16..18: only 18 failed
    ((_, columns, _),) = [s for s in scans if s[0] == "p2/c/trajectories"]
    # not message_raw, tool_calls...; and no write_id: every row is committed (visibility.all_visible)
    assert set(columns) == {"message_content", "message_role"}


def test_explain_shows_the_filter_pushed_into_the_arrow_scan(store):
    plan = "".join(store.sql("EXPLAIN SELECT reward FROM trajectories WHERE model = 'a' AND step = 1").column(1)
                   .to_pylist())
    scan = plan[plan.index("PYTHON_ARROW_SCAN"):]
    assert "Filters:" in scan and '"step" = 1' in scan


def test_small_tables_read_whole_answer_as_scans_do(store, monkeypatch):
    """A small table is taken whole and filtered in Arrow (`small_tables`), and its columns kept
    for the next query: the same answers as Lance scans with the filter pushed down."""
    queries = ["SELECT project, model, step, split, reward FROM trajectories WHERE split = 'train' AND reward > 0.2 "
               "ORDER BY ALL",
               "SELECT model, count(*) AS n, sum(step) AS s FROM trajectories WHERE step BETWEEN 1 AND 2 GROUP BY ALL "
               "ORDER BY ALL",
               "SELECT model, role, count(*) AS n FROM messages WHERE role IN ('tool', 'user') GROUP BY ALL ORDER BY ALL",
               "SELECT model, name, value FROM metrics WHERE name = 'val/reward' AND model = 'a' ORDER BY ALL",
               "SELECT count(*) AS n FROM groups"]
    small_tables.clear()
    read, kept = [rows(store.sql(q)) for q in queries], [rows(store.sql(q)) for q in queries]
    monkeypatch.setattr(small_tables, "SMALL_TABLE", -1)  # every table scanned
    assert [rows(store.sql(q)) for q in queries] == read == kept
    assert all(read)
