"""The UI's JSON API, without a browser: answers agree with artstore's read API, errors are
clear JSON, time travel reads the past, and scenario matching is exact."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

import artstore as art
from artstore.checkpoints.smoothing import Ema, Window, smoothed
from artstore.ui import jsonable, runs
from artstore.ui.server import create_app
from tests.conftest import tool_call_trajectory

RUN = "proj/agent"


def log_steps(model: art.Model, steps: range, scenarios: list[str]) -> None:
    for step in steps:
        groups = [art.TrajectoryGroup([tool_call_trajectory(0.1 * step + 0.01 * j, i=j) for j in range(3)],
                                      metadata={"scenario": s})
                  for s in scenarios]
        for g, s in zip(groups, scenarios, strict=True):
            for t in g.trajectories:
                t.metadata["scenario_id"] = s
        model.log_sync(groups, split="val", step=step)


@pytest.fixture
def client(store_location):
    model = store_location.model(name="agent", project="proj", commit="sync")  # one version per log: the time-travel test names them
    log_steps(model, range(4), ["s-1", "s-10", "s-1'x"])
    return TestClient(create_app(store_location.store())), model


def test_series_are_per_step_means_smoothed_as_retention_smooths(client):
    c, model = client
    got = c.get("/api/series", params={"run": RUN, "metric": "val/reward", "smooth": "ema:0.5"}).json()
    metrics = model.run.metrics()
    by_step: dict[int, list[float]] = {}
    for row in metrics.filter(pa.compute.equal(metrics["name"], "val/reward")).to_pylist():
        by_step.setdefault(row["step"], []).append(row["value"])
    means = {s: sum(v) / len(v) for s, v in sorted(by_step.items())}
    assert got["steps"] == list(means) and got["values"] == pytest.approx(list(means.values()))
    assert got["smoothed"] == pytest.approx(list(smoothed(means, Ema(alpha=0.5)).values()))
    window = c.get("/api/series", params={"run": RUN, "metric": "val/reward", "smooth": "window:2"}).json()
    assert window["smoothed"] == pytest.approx(list(smoothed(means, Window(size=2)).values()))


def test_unknown_metric_run_and_bad_smoothing_are_clear_json_errors(client):
    c, _ = client
    r = c.get("/api/series", params={"run": RUN, "metric": "val/rewrd"})
    assert r.status_code == 400 and "did you mean val/reward" in r.json()["message"]
    r = c.get("/api/series", params={"run": "proj/nobody", "metric": "val/reward"})
    assert r.status_code == 404 and r.json()["error"] == "RunNotFoundError"
    r = c.get("/api/series", params={"run": "no-slash", "metric": "val/reward"})
    assert r.status_code == 400 and "PROJECT/MODEL" in r.json()["message"]
    r = c.get("/api/series", params={"run": RUN, "metric": "val/reward", "smooth": "ema:7"})
    assert r.status_code == 400 and "ema:ALPHA" in r.json()["message"]
    r = c.get("/api/rollouts/groups", params={"run": RUN, "split": "val", "step": 0, "as_of": "no-such-tag"})
    assert r.status_code == 404


def test_sql_box_refuses_writes_and_returns_rows_by_position(client):
    c, _ = client
    r = c.post("/api/sql", json={"query": "DELETE FROM trajectories"})
    assert r.status_code == 400 and "read-only" in r.json()["message"]
    got = c.post("/api/sql", json={"query": "SELECT 1 AS a, 2 AS a, 'nan'::DOUBLE AS b"}).json()
    assert got["rows"] == [[1, 2, None]] and [col["name"] for col in got["columns"]] == ["a", "a", "b"]
    got = c.post("/api/sql", json={"query": "SELECT step, count(*) AS n FROM trajectories GROUP BY step ORDER BY step"}).json()
    assert got["rows"] == [[s, 9] for s in range(4)] and got["columns"][1]["kind"] == "number"


def test_group_shows_conversation_best_worst_and_logprobs_on_demand(client):
    c, model = client
    groups = c.get("/api/rollouts/groups", params={"run": RUN, "split": "val", "step": 2}).json()["groups"]
    assert [g["metadata"]["scenario"] for g in groups] == ["s-1", "s-10", "s-1'x"]
    g = c.get("/api/rollouts/group", params={"run": RUN, "split": "val", "step": 2, "group_id": groups[1]["group_id"]}).json()
    assert [t["reward"] for t in g["trajectories"]] == pytest.approx([0.2, 0.21, 0.22])
    assert (g["best"], g["worst"]) == (2, 0)
    first = g["trajectories"][0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "tool", "assistant"]
    assert first[2]["tool_calls"] == [{"id": "call_0", "type": "function", "name": "search_inbox",
                                       "arguments": {"query": "offsite 0"}}]
    assert first[3]["tool_name"] == "search_inbox" and first[3]["tool_call_id"] == "call_0"
    assert first[4]["trainable"] and first[4]["finish_reason"] == "stop"
    assert g["trajectories"][0]["metadata"]["scenario_id"] == "s-10"


def test_scenario_across_steps_matches_metadata_exactly(client):
    c, _ = client
    for value in ("s-1", "s-10", "s-1'x"):
        got = c.get("/api/rollouts/scenario", params={"run": RUN, "split": "val", "key": "scenario_id",
                                                      "value": json.dumps(value)}).json()["groups"]
        assert [g["step"] for g in got] == [0, 1, 2, 3], value
        assert all(g["trajectories"] == 3 for g in got)  # never the groups of "s-10" for "s-1"
        by_group = c.get("/api/rollouts/scenario", params={"run": RUN, "split": "val", "key": "scenario", "level": "group",
                                                           "value": json.dumps(value)}).json()["groups"]
        assert [(g["step"], g["trajectories"]) for g in by_group] == [(s, 3) for s in range(4)], value
    by_index = c.get("/api/rollouts/scenario", params={"run": RUN, "split": "val", "group_index": 1}).json()["groups"]
    assert [(g["step"], g["group_index"], g["best"]) for g in by_index] == [(s, 1, 2) for s in range(4)]
    assert c.get("/api/rollouts/scenario", params={"run": RUN, "split": "val"}).status_code == 400


def test_time_travel_reads_the_run_as_of_a_version_and_a_tag(client):
    c, model = client
    model.run.tag("three-steps", model.run.versions()[2]["version"])
    log_steps(model, range(4, 6), ["s-1"])
    versions = c.get("/api/versions", params={"run": RUN}).json()
    assert versions["tags"] == {"three-steps": 3}
    tagged = next(v for v in versions["versions"] if v["tags"] == ["three-steps"])
    newest, held = c.get("/api/versions/held", params={
        "run": RUN, "versions": f"{versions['versions'][0]['version']},{tagged['version']}"}).json()
    assert newest["latest_step"] == 5 and newest["logs"] == 6
    assert held["logs"] == 3 and held["latest_step"] == 2 and held["last_log"].startswith("val step 2")
    assert c.get("/api/versions/held", params={"run": RUN, "versions": "1,x"}).status_code == 400
    now = c.get("/api/series", params={"run": RUN, "metric": "val/reward"}).json()
    then = c.get("/api/series", params={"run": RUN, "metric": "val/reward", "as_of": "three-steps"}).json()
    assert now["steps"] == list(range(6)) and then["steps"] == [0, 1, 2]
    steps = c.get("/api/rollouts/steps", params={"run": RUN, "as_of": "3"}).json()["splits"]["val"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    query = {"query": "SELECT max(step) FROM trajectories"}
    assert c.post("/api/sql", json=query).json()["rows"] == [[5]]
    assert c.post("/api/sql", json={**query, "as_of": {RUN: "three-steps"}}).json()["rows"] == [[2]]


def test_checkpoints_show_ranks_and_the_plan_without_deleting(client, tmp_path):
    c, model = client
    for step in range(4):
        model.run.register_checkpoint(step, uri=str(tmp_path / f"ck{step}"), linked=True, size_bytes=100 * (step + 1))
    got = c.get("/api/checkpoints", params={"run": RUN}).json()
    assert got["latest"] == 3 and got["best"] == 3
    assert got["plan"]["keep"] == [3] and got["plan"]["delete"] == [0, 1, 2]
    assert "ART's delete_checkpoints rule" in got["plan"]["source"]
    assert [c["status"] for c in model.run.checkpoints().to_pylist()] == ["ready"] * 4  # planned, not applied
    missing = c.get("/api/checkpoints", params={"run": RUN, "metric": "val/nothing"}).json()
    assert missing["plan"] is None and "val/nothing" in missing["plan_error"] and missing["best"] is None


def test_runs_table_status_and_json_safety():
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert runs.status(now - timedelta(minutes=3), 0, now) == "active"
    assert runs.status(now - timedelta(hours=3), 0, now) == "idle"
    assert runs.status(now - timedelta(hours=3), 1, now) == "saving"
    assert jsonable.value([("a", math.nan), ("b", 1.5)]) == {"a": None, "b": 1.5}
    assert jsonable.value({"t": now, "x": [math.inf, 2]}) == {"t": "2026-12-06T12:00:00+00:00", "x": [None, 2]}


def test_runs_table_has_a_column_per_config_key_that_differs_between_runs(tmp_path):
    for name, lr in (("lr-small", 5e-6), ("lr-large", 2e-5)):
        model = art.Model(name=name, project="proj", base_path=str(tmp_path), report_metrics=[],
                          config={"learning_rate": lr, "seed": 7})
        model.log_sync([art.TrajectoryGroup([tool_call_trajectory(0.5)])], split="val", step=0)
    got = runs.table(art.open_store(str(tmp_path)))
    assert "model.learning_rate" in got["columns"] and "model.seed" not in got["columns"]
    by_run = {r["model"]: r for r in got["rows"]}
    assert by_run["lr-small"]["model.learning_rate"] == 5e-6 and by_run["lr-large"]["model.learning_rate"] == 2e-5
    assert by_run["lr-small"]["config"] == {"model.learning_rate": 5e-6, "model.seed": 7}


def test_ui_command_is_listed_and_refuses_a_missing_store(tmp_path):
    from typer.testing import CliRunner

    from artstore.cli import app

    runner = CliRunner()
    helped = runner.invoke(app, ["ui", "--help"])
    assert helped.exit_code == 0 and "read-only" in helped.output.lower() and "--port" in helped.output
    missing = runner.invoke(app, ["ui", "--store", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 3 and "no store at" in missing.output
