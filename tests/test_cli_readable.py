"""The command line as people and pipes read it (issue 17 item 4, issue 16 item 7): names never
cut, plain output when piped, --format on every listing, one size unit, "did you mean", errors as
one line with a documented exit code, and the run's stored configuration."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import artstore as art
from artstore.cli import app
from tests.conftest import tool_call_trajectory

PROJECT = "code-long-project-name"
NAMES = ("agent-with-a-rather-long-name-lr-0001", "agent-with-a-rather-long-name-lr-0002")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs whose names differ only at their end, each with val and train at steps 0-2, a
    stored Model config, and a trainer-like TrainConfig per run; one checkpoint on the first.
    Logged in sync mode: one version per log, which the versions and as-of tests name."""
    path = str(tmp_path_factory.mktemp("readable") / "store")
    for n, name in enumerate(NAMES):
        model = art.TrainableModel(name=name, project=PROJECT, base_model="tiny", base_path=path,
                                   report_metrics=[], config={"group_size": 4, "seed": n}, commit="sync")
        for step in range(3):
            model.log_sync([art.TrajectoryGroup([tool_call_trajectory(0.1 * step + 0.05 * i + n, i)
                                                 for i in range(3)])], split="val", step=step)
            model.log_sync(None, split="train", step=step, metrics={"reward": 0.2 * step, "loss": 1 / (step + 1)})
        model._store_config("train", art.TrainConfig(learning_rate=1e-4 * (n + 1)), 0)
    first = art.open_store(path).run(PROJECT, NAMES[0])
    cps = first.checkpoints_table()
    cps.begin(2)
    cps.mark_ready(2, size_bytes=3 * 1024 * 1024)
    return path


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


RUN = f"{PROJECT}/{NAMES[0]}"


# -- names, tables and pipes ---------------------------------------------------------------------
@pytest.mark.parametrize("args", [["runs"], ["sql", "SELECT project, model, count(*) AS n FROM logs GROUP BY ALL"]])
def test_names_are_never_cut_in_an_80_column_table(store, monkeypatch, args):
    monkeypatch.setenv("COLUMNS", "80")
    out = run(*args, "--store", store, "--format", "table").stdout
    assert "…" not in out
    for name in (PROJECT, *NAMES):
        assert name in out  # whole, on one line


def test_piped_output_is_plain_tsv_with_whole_names(store):
    out = run("runs", "--store", store).stdout  # CliRunner's stdout is not a terminal
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["project", "model", "step"]
    assert [line.split("\t")[:2] for line in lines[1:]] == [[PROJECT, n] for n in NAMES]
    assert "│" not in out and "─" not in out


@pytest.mark.parametrize("command", [
    ["runs"], ["history", RUN], ["history", RUN, "--list"], ["history", RUN, "--all"], ["versions", RUN],
    ["checkpoints", RUN], ["sql", "SELECT model, step FROM logs"], ["prune", RUN, "--keep-last", "1"],
    ["compact", RUN],
])
@pytest.mark.parametrize("fmt", ["table", "csv", "json", "tsv"])
def test_every_listing_command_takes_format(store, command, fmt):
    out = run(*command, "--store", store, "--format", fmt).stdout
    if fmt == "json":
        assert isinstance(json.loads(out), list) and json.loads(out)
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        header = out.splitlines()[0]
        assert sep in header and "│" not in out


def test_sizes_use_one_unit_system_everywhere(store):
    runs_table = run("runs", "--store", store, "--format", "table").stdout
    checkpoints = run("checkpoints", RUN, "--store", store, "--format", "table").stdout
    show = run("show", RUN, "--store", store).stdout
    assert "3.0MiB" in checkpoints and "3.0MiB" in show  # 3 * 1024 * 1024 bytes
    sizes = re.findall(r"[0-9.]+([KMGT]?i?B)\b", runs_table + checkpoints + show)
    assert sizes and all(unit in ("B", "KiB", "MiB", "GiB", "TiB") for unit in sizes)


# -- readable defaults ---------------------------------------------------------------------------
def test_history_without_metrics_shows_key_metrics_val_and_train_of_a_step_on_one_row(store):
    rows = json.loads(run("history", RUN, "--store", store, "--format", "json").stdout)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[1]) == {"step", "val/reward", "train/reward", "train/loss"}
    assert rows[1]["val/reward"] == pytest.approx(0.15) and rows[1]["train/reward"] == pytest.approx(0.2)
    listing = json.loads(run("history", RUN, "--store", store, "--list", "--format", "json").stdout)
    assert {m["metric"] for m in listing} >= {"val/reward", "val/reward_std_dev", "train/loss"}


def test_show_is_a_summary_with_best_and_latest(store):
    out = run("show", RUN, "--store", store).stdout
    assert len(out.splitlines()) <= 8
    flat = " ".join(out.split())
    assert "best step 2 by val/reward" in flat and "latest step 2:" in flat
    assert "checkpoints 1 ready; ready: 2 (3.0MiB)" in flat
    assert "learning_rate=0.0001" in flat and "group_size=4" in flat


def test_versions_show_the_step_split_and_log_of_each_version(store):
    rows = json.loads(run("versions", RUN, "--store", store, "--format", "json").stdout)
    assert [(r["step"], r["split"]) for r in rows[:6]] == [(s, sp) for s in range(3) for sp in ("val", "train")]
    assert all(r["log"] for r in rows)  # a log id, or what else the commit was (compaction)
    assert {r["log"] for r in rows[6:]} <= {"compaction"}


def test_version_and_shell_completion():
    assert run("--version").stdout.strip() == f"artstore {art.__version__}"
    top = run("--help").stdout
    assert "--install-completion" in top and "--show-completion" in top


# -- did you mean, internal names -----------------------------------------------------------------
def test_a_mistyped_metric_gets_did_you_mean(store):
    for args in (["history", RUN, "-m", "val/rewrd"], ["plot", RUN, "-m", "val/rewrd"]):
        err = run(*args, "--store", store, code=1).stderr
        assert "did you mean 'val/reward'" in err and err.count("\n") == 1


def test_a_mistyped_run_gets_did_you_mean(store):
    err = run("show", f"{PROJECT}/{NAMES[0][:-1]}x", "--store", store, code=3).stderr
    assert f"'{RUN}'" in err.split("did you mean")[1] and err.count("\n") == 1


@pytest.mark.parametrize("query", ["SELECT * FROM trajectorie", "SELECT * FROM metric WHERE 1 = 1"])
def test_a_mistyped_view_gets_did_you_mean_and_no_internal_name(store, query):
    err = run("sql", query, "--store", store, code=1).stderr
    assert "Did you mean" in err and "_empty_" not in err and not re.search(r"_r[0-9]+_", err)


def test_sql_errors_never_name_internal_views(store):
    err = run("sql", "SELECT nope FROM trajectories UNION ALL SELECT nope FROM metrics", "--store", store,
              code=1).stderr
    assert "_empty_" not in err and not re.search(r"_r[0-9]+_", err)


# -- sql: one run, as of its own tag; parameters ---------------------------------------------------
def test_sql_run_reads_one_run_and_as_of_applies_to_it(store):
    q = "SELECT model, count(*) AS n FROM logs GROUP BY model"
    one = json.loads(run("sql", q, "--run", RUN, "--store", store, "-f", "json").stdout)
    assert one == [{"model": NAMES[0], "n": 6}]
    run("tag", RUN, "first-two", "--version", "2", "--store", store)
    assert json.loads(run("sql", q, "--run", RUN, "--as-of", "first-two", "--store", store, "-f", "json").stdout) \
        == [{"model": NAMES[0], "n": 2}]
    everywhere = run("sql", q, "--as-of", "first-two", "--store", store, code=3).stderr
    assert "--run PROJECT/MODEL" in everywhere


def test_a_param_that_reads_as_a_number_still_matches_a_text_column(store):
    q = "SELECT count(*) AS n FROM logs WHERE model = ?"
    assert json.loads(run("sql", q, "-p", "2024", "--store", store, "-f", "json").stdout) == [{"n": 0}]
    assert json.loads(run("sql", "SELECT count(*) AS n FROM logs WHERE step = ?", "-p", "1", "--store", store,
                          "-f", "json").stdout) == [{"n": 4}]
    assert json.loads(run("sql", "SELECT ? + 1 AS x", "-p", "2024", "--store", store, "-f", "json").stdout) \
        == [{"x": 2025}]


# -- values JSON and CSV cannot hold as they are (issue 16 item 7) ---------------------------------
ODD = ("SELECT TIME '01:02:03' AS t, INTERVAL 3 DAY + INTERVAL 90 MINUTE AS i, 'infinity'::TIMESTAMP AS inf, "
       "'nan'::DOUBLE AS n, 'inf'::DOUBLE AS f, uuid() AS u, 1.5::DECIMAL(10, 2) AS d, 'ab'::BLOB AS b")


def test_json_holds_time_interval_infinity_and_nan_as_strict_json(store):
    out = run("sql", ODD, "--store", store, "-f", "json").stdout
    row = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))[0]
    assert row["t"] == "01:02:03" and row["i"] == "P3DT5400S" and row["inf"] == "infinity"
    assert row["n"] is None and row["f"] is None and row["d"] == 1.5 and row["b"] == "YWI="


@pytest.mark.parametrize("fmt", ["csv", "tsv", "table"])
def test_csv_tsv_and_table_hold_interval_time_and_infinity(store, fmt):
    out = run("sql", ODD, "--store", store, "-f", fmt).stdout
    assert "P3DT5400S" in out and "infinity" in out and "01:02:03" in out


# -- output that cannot be written -----------------------------------------------------------------
def test_output_into_a_missing_folder_is_one_line_exit_4(store, tmp_path):
    for args in (["sql", "SELECT 1 AS x", "-f", "csv"], ["plot", RUN, "-m", "val/reward"]):
        err = run(*args, "--output", str(tmp_path / "missing" / "out.png" if args[0] == "plot" else
                                          tmp_path / "missing" / "out.csv"), "--store", store, code=4).stderr
        assert err.startswith("error: No such file or directory") and err.count("\n") == 1


# -- the run's configuration ------------------------------------------------------------------------
def test_the_runs_config_is_stored_shown_and_queryable_by_learning_rate(store):
    r = art.open_store(store).run(PROJECT, NAMES[1])
    config = r.config()
    assert config["model"] == {"group_size": 4, "seed": 1}
    assert config["train"]["learning_rate"] == 2e-4 and config["train"]["beta"] == 0.0
    rows = json.loads(run("runs", "--store", store, "-f", "json").stdout)
    assert rows[0]["config"]["train"]["learning_rate"] == pytest.approx(1e-4)
    q = ("SELECT c.config->>'learning_rate' AS lr, avg(m.value) AS reward FROM configs c JOIN metrics m "
         "USING (project, model) WHERE c.source = 'train' AND m.name = 'val/reward' GROUP BY lr ORDER BY lr")
    by_lr = json.loads(run("sql", q, "--store", store, "-f", "json").stdout)
    assert [r["lr"] for r in by_lr] == ["0.0001", "0.0002"]
    assert by_lr[1]["reward"] - by_lr[0]["reward"] == pytest.approx(1.0)


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_an_unchanged_config_is_stored_once_a_changed_one_again_and_both_are_versioned(tmp_path, commit):
    def model() -> art.TrainableModel:  # a new process's model object: it remembers nothing
        return art.TrainableModel(name="m", project="p", base_model="tiny", base_path=str(tmp_path),
                                  report_metrics=[], config={"group_size": 4}, commit=commit)
    first = model()
    first._store_config("train", art.TrainConfig(learning_rate=1e-4), 0)
    first.log_sync(None, split="val", step=0, metrics={"reward": 0.5})
    again = model()
    again._store_config("train", art.TrainConfig(learning_rate=1e-4), 1)  # the same: no row
    before = again.log_sync(None, split="val", step=1, metrics={"reward": 0.6})  # the same model config: no row
    again._store_config("train", art.TrainConfig(learning_rate=3e-4), 1)  # group: the step-1 log lands first
    again.log_sync(None, split="val", step=2, metrics={"reward": 0.7})
    again.flush()
    if commit == "sync":
        assert before.logs_version == 2  # one version per log
    q = "SELECT source, count(*) AS n FROM configs GROUP BY source ORDER BY source"
    assert json.loads(run("sql", q, "--store", str(tmp_path), "-f", "json").stdout) == \
        [{"source": "model", "n": 1}, {"source": "train", "n": 2}]
    r = art.open_store(str(tmp_path)).run("p", "m")
    assert r.config()["model"] == {"group_size": 4} and r.config()["train"]["learning_rate"] == 3e-4
    assert r.config(as_of=before.logs_version)["train"]["learning_rate"] == 1e-4  # as of the step-1 log
    r.tag("before-lr-change", before.logs_version)
    assert r.config(as_of="before-lr-change")["train"]["learning_rate"] == 1e-4
    old = json.loads(run("sql", "SELECT config->>'learning_rate' AS lr FROM configs WHERE source = 'train'",
                         "--run", "p/m", "--as-of", "before-lr-change", "--store", str(tmp_path), "-f", "json").stdout)
    assert old == [{"lr": "0.0001"}]


# -- plot and trajectory ------------------------------------------------------------------------------
def test_plot_draws_two_runs_in_the_terminal_and_writes_png_and_svg(store, tmp_path):
    out = run("plot", RUN, f"{PROJECT}/{NAMES[1]}", "-m", "val/reward", "--smooth", "ema:0.5", "--width", "80",
              "--store", store).stdout
    assert NAMES[0] in out and NAMES[1] in out and "step" in out and "\x1b[" not in out
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml")):
        target = tmp_path / f"curve{suffix}"
        run("plot", RUN, f"{PROJECT}/{NAMES[1]}", "-m", "val/reward", "--output", str(target), "--store", store)
        assert target.read_bytes().startswith(magic) and target.stat().st_size > 1000


def test_trajectory_prints_a_transcript_with_tool_calls_and_the_best_reward(store):
    out = run("trajectory", RUN, "--step", "2", "--best", "--store", store).stdout
    assert "reward 0.3" in out  # 0.2 + 0.05 * 2, the best of the step's three
    for part in ("system", "user", "assistant", "→ search_inbox", '"query": "offsite 2"',
                 "tool result of search_inbox (call_2)", "Day 2.", "scenario_id"):
        assert part in out, part
    worst = run("trajectory", RUN, "--step", "2", "--worst", "--store", store).stdout
    assert "reward 0.2" in worst and "offsite 0" in worst
    err = run("trajectory", RUN, "--step", "9", "--store", store, code=1).stderr
    assert "steps logged: 0, 1, 2" in err
