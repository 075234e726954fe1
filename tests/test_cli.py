"""The `artstore` command line: every command through typer's CliRunner, and one real process."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import artstore as art
from artstore.cli import app
from tests.test_sql import rollout

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Run p/a: val 0.5 (step 0), train 0.25 and val 0.75 (step 1), a ready checkpoint 1; run p/b: one log."""
    path = str(tmp_path_factory.mktemp("cli") / "store")
    a = art.Model(name="a", project="p", base_path=path, report_metrics=[])
    a.log_sync([art.TrajectoryGroup([rollout(0.25, 0), rollout(0.75, 1)])], split="val", step=0)
    a.flush()  # version 1 of logs holds this log alone (the tests read as_of it): no batch with the next
    a.log_sync([art.TrajectoryGroup([rollout(0.0, 2), rollout(0.5, 3)])], split="train", step=1)
    a.log_sync([art.TrajectoryGroup([rollout(0.5, 4), rollout(1.0, 5)])], split="val", step=1)
    cps = a.run.checkpoints_table()
    cps.begin(1)
    cps.mark_ready(1, size_bytes=123)
    b = art.Model(name="b", project="p", base_path=path, report_metrics=[])
    b.log_sync([art.TrajectoryGroup([rollout(0.1, 6)])], split="train", step=0)
    return path


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def test_runs_lists_step_last_rewards_rows_and_size(store):
    rows = json.loads(run("runs", "--store", store, "--format", "json").stdout)
    assert [(r["project"], r["model"], r["step"]) for r in rows] == [("p", "a", 1), ("p", "b", 0)]
    a = rows[0]
    assert a["val/reward"] == pytest.approx(0.75) and a["train/reward"] == pytest.approx(0.25)
    assert a["logs"] == 3 and a["trajectories"] == 6 and a["size_bytes"] > 0
    assert rows[1]["val/reward"] is None
    table = run("runs", "--store", store, "--format", "table").stdout
    assert "p" in table and "KiB" in table and "2 rows" in table


def test_show_summarises_latest_best_versions_tags_and_checkpoints(store):
    out = " ".join(run("show", "p/a", "--store", store).stdout.split())
    assert "logs 3 (train 1, val 2); steps 0..1; 6 trajectories, 0 exceptions" in out
    assert "latest step 1: val/reward 0.75, train/reward 0.25" in out
    assert "best step 1 by val/reward (step mean 0.75)" in out
    versions = [v["version"] for v in art.open_store(store).run("p", "a").versions()]  # 1-3: group commits
    assert f"versions {len(versions)}, latest {versions[-1]}" in out
    assert "checkpoints 1 ready; ready: 1 (123B)" in out


def test_history_formats_and_metric_filter(store):
    out = run("history", "p/a", "--store", store, "-m", "val/reward", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["step", "val/reward"]
    assert [(r["step"], float(r["val/reward"])) for r in rows] == [("0", 0.5), ("1", 0.75)]
    full = json.loads(run("history", "p/a", "--store", store, "--all", "--format", "json").stdout)
    assert len(full) == 3 and full[1]["train/reward"] == pytest.approx(0.25) and "recorded_at" in full[0]
    bad = run("history", "p/a", "--store", store, "-m", "val/rewrd", code=1)
    assert "did you mean 'val/reward'" in bad.stderr


def test_sql_table_csv_json_and_parquet(store, tmp_path):
    q = "SELECT model, split, step, avg(reward) AS mean FROM trajectories GROUP BY ALL ORDER BY ALL"
    assert "p" in run("sql", q, "--store", store).stdout
    out = run("sql", q, "--store", store, "--format", "csv").stdout
    lines = out.splitlines()
    assert lines[0] == '"model","split","step","mean"'
    assert lines[1:] == ['"a","train",1,0.25', '"a","val",0,0.5', '"a","val",1,0.75', '"b","train",0,0.1']
    rows = json.loads(run("sql", q, "--store", store, "--format", "json").stdout)
    assert rows[0] == {"model": "a", "split": "train", "step": 1, "mean": 0.25}
    target = tmp_path / "out.parquet"
    run("sql", q, "--store", store, "--format", "parquet", "--output", str(target))
    assert pq.read_table(target).num_rows == 4
    nested = run("sql", "SELECT message_role FROM trajectories LIMIT 1", "--store", store, "--format", "csv").stdout
    assert json.loads(next(csv.DictReader(io.StringIO(nested)))["message_role"])[0] == "system"


def test_sql_params_as_of_and_versions(store):
    q = "SELECT count(*) AS n FROM trajectories WHERE model = ? AND step = ?"
    assert json.loads(run("sql", q, "-p", "a", "-p", "1", "--store", store, "-f", "json").stdout) == [{"n": 4}]
    named = "SELECT count(*) AS n FROM trajectories WHERE model = $m AND split = $s"
    out = run("sql", named, "-p", "m=a", "-p", "s=val", "--store", store, "-f", "json").stdout
    assert json.loads(out) == [{"n": 4}]
    run("sql", named, "-p", "a", "--store", store, code=2)  # $names need NAME=VALUE
    old = run("sql", "SELECT count(*) AS n FROM trajectories WHERE model = 'a'", "--as-of", "1",
              "--store", store, "-f", "json", "--show-versions")
    assert json.loads(old.stdout) == [{"n": 2}]
    assert json.loads(old.stderr)["p/a"]["logs"] == 1


def test_versions_and_tag(store):
    versions = json.loads(run("versions", "p/b", "--store", store, "-f", "json").stdout)
    assert [v["version"] for v in versions] == [1] and versions[0]["tags"] == []
    assert "tagged version 1 of p/b as 'first'" in run("tag", "p/b", "first", "--store", store).stdout
    assert json.loads(run("versions", "p/b", "--store", store, "-f", "json").stdout)[0]["tags"] == ["first"]
    run("tag", "p/a", "start", "--version", "1", "--store", store)
    q = "SELECT count(*) AS n FROM trajectories WHERE model = 'a'"
    assert json.loads(run("sql", q, "--as-of", "start", "--store", store, "-f", "json").stdout) == [{"n": 2}]
    everywhere = run("sql", "SELECT count(*) FROM trajectories", "--as-of", "start", "--store", store, code=3)
    assert "VersionNotFoundError" in everywhere.stderr and "models/b" in everywhere.stderr  # p/b has no such tag


def test_compact_one_run_and_all(store):
    out = run("compact", "p/a", "--store", store).stdout
    assert "trajectories" in out and "p/a" in out
    assert "p/b" in run("compact", "--all", "--store", store).stdout
    run("compact", "--store", store, code=2)
    run("compact", "p/a", "--all", "--store", store, code=2)


@pytest.mark.parametrize(("args", "code"), [
    (["sql", "DROP VIEW trajectories"], 1),
    (["sql", "SELECT * FROM read_csv('/etc/passwd')"], 1),
    (["sql", "SELECT nope FROM trajectories"], 1),
    (["show", "p/zzz"], 3),
    (["history", "zzz"], 1),
    (["versions", "p/zzz"], 3),
    (["sql", "SELECT count(*) FROM logs", "--as-of", "no-such-tag"], 3),
    (["sql", "SELECT 1", "--format", "parquet"], 2),
    (["sql", "SELECT 1", "--format", "xml"], 2),
    (["tag", "p/a"], 2),
    (["runs", "--bogus"], 2),
])
def test_errors_are_one_line_with_clear_exit_codes(store, args, code):
    result = run(*args, "--store", store, code=code)
    if code in (1, 3):
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_a_missing_store_is_not_found(tmp_path):
    result = run("runs", "--store", str(tmp_path / "nothing"), code=3)
    assert "no store at" in result.stderr


def test_help_texts_teach_with_examples():
    top = run("--help").stdout
    for command in ("runs", "show", "history", "sql", "versions", "tag", "compact"):
        assert command in top
        assert "Example" in run(command, "--help").stdout
    sql_help = run("sql", "--help").stdout
    assert "messages" in sql_help and "--param" in sql_help and "read-only" in sql_help.lower()


def test_python_dash_m_artstore_sql_in_a_real_process(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANCE_LOG": "error"}
    done = subprocess.run(
        [sys.executable, "-m", "artstore", "sql", "--store", store, "--format", "csv",
         "SELECT model, count(*) AS n FROM messages WHERE role = 'tool' GROUP BY model ORDER BY model"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['"model","n"', '"a",6', '"b",1']
    refused = subprocess.run([sys.executable, "-m", "artstore", "sql", "--store", store, "DELETE FROM metrics"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: SqlError")
