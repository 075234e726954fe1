"""The journal (artstore.log.journal) and its fold (artstore.log.fold): a log is one commit of one
row of `logs`; readers see a log's rows the same before and after the fold copies them into the
data tables; folds racing or killed at any point lose nothing and double nothing; a run whose logs
table predates the journal keeps its layout."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import artstore as art
from artstore.log import fold, journal
from artstore.schema import arrow_schema
from artstore.storage import datasets, files, scans, writes
from tests.conftest import tool_call_trajectory

ROOT = Path(__file__).resolve().parent.parent
VIEWS = [
    "SELECT split, step, count(*) AS n, round(sum(reward), 9) AS r FROM trajectories GROUP BY ALL ORDER BY ALL",
    "SELECT split, step, count(*) AS n FROM groups GROUP BY ALL ORDER BY ALL",
    "SELECT role, count(*) AS n FROM messages GROUP BY ALL ORDER BY ALL",
    "SELECT name, count(*) AS n, round(sum(value), 9) AS v FROM metrics GROUP BY ALL ORDER BY ALL",
    "SELECT count(*) AS n FROM history",
    "SELECT count(*) AS n FROM logs",
    "SELECT logs, trajectories, groups, metric_values FROM runs",
    "SELECT step, reward FROM trajectories WHERE step = 3 AND reward > 0.01 ORDER BY reward",
]


def _log(model: art.Model, step: int, n: int = 2, **kw) -> art.LogRecord:
    groups = [art.TrajectoryGroup([tool_call_trajectory(step / 10 + j / 100, step * 10 + j) for j in range(n)],
                                  metrics={"judge": step / 7})]
    return model.log_sync(groups, split="train" if step % 2 else "val", step=step, metrics={"loss": step / 3}, **kw)


def _model(base: str, name: str = "m") -> art.Model:
    return art.Model(name=name, project="p", base_path=base, report_metrics=[])


def _reads(run: art.Run) -> tuple:
    store = art.open_store(run.store.uri)
    return (run.groups(), run.trajectories().drop_columns(["recorded_at"]), run.history(), run.metrics(),
            run.logs(), run.groups(split="val", step=4), [store.sql(q).to_pylist() for q in VIEWS],
            run.best_step("val/reward"))


def _raw(run: art.Run, table: str) -> int:
    found = scans.scan(run.table_location(table), columns=["write_id"])
    return 0 if found is None else found.num_rows


def test_a_sync_log_is_one_commit_of_one_logs_row_and_writes_no_data_table(tmp_path):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="sync")
    version = 0
    for step in range(8):  # fewer versions than FOLD_EVERY: no fold yet
        record = _log(model, step)
        assert record.logs_version - version in (1, 2)  # its commit (after a compaction of logs)
        version = record.logs_version
    run = model.run
    assert {t: _raw(run, t) for t in ("trajectories", "groups", "metrics")} == {"trajectories": 0, "groups": 0,
                                                                               "metrics": 0}
    assert run.trajectories().num_rows == 16
    assert "trajectories.lance" not in files.list_dir(run.location)


def test_readers_see_the_same_rows_before_and_after_the_fold(tmp_path):
    model = _model(str(tmp_path))
    for step in range(10):
        _log(model, step)
    run = model.run
    before = _reads(run)
    assert fold.fold(run.location) == {"trajectories": 10, "groups": 10, "metrics": 10}
    assert {t: _raw(run, t) for t in ("trajectories", "groups")} == {"trajectories": 20, "groups": 10}
    assert _reads(run) == before
    for step in range(10, 13):  # folded and unfolded logs together
        _log(model, step)
    partly = _reads(run)
    fold.fold(run.location)
    assert _reads(run) == partly
    assert fold.fold(run.location) == {"trajectories": 0, "groups": 0, "metrics": 0}


def test_time_travel_reads_a_folded_run_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSTORE_COMMIT", "sync")  # sync: the versions named below are one per log
    model = _model(str(tmp_path))
    versions = [_log(model, step).logs_version for step in range(6)]
    fold.fold(model.run.location)
    run = model.run
    for i, v in enumerate(versions):
        assert run.trajectories(as_of=v)["step"].to_pylist() == [s for s in range(i + 1) for _ in range(2)]
        got = run.store.sql("SELECT count(*) AS n FROM trajectories", as_of=v).to_pylist()
        assert got == [{"n": 2 * (i + 1)}]


def test_racing_folds_copy_each_row_once(tmp_path):
    model = _model(str(tmp_path))
    for step in range(12):
        _log(model, step)
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        fold.fold(model.run.location)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fold.fold(model.run.location)  # whatever a loser left
    run = model.run
    assert {t: _raw(run, t) for t in ("trajectories", "groups", "metrics")} == \
        {"trajectories": 24, "groups": 12, "metrics": run.metrics().num_rows}
    assert run.trajectories().num_rows == 24


class _Died(BaseException):
    """Stands for the process dying inside a fold."""


def test_a_fold_that_died_after_its_append_doubles_nothing(tmp_path, monkeypatch):
    model = _model(str(tmp_path))
    for step in range(8):
        _log(model, step)
    run = model.run
    before = _reads(run)
    real, calls = writes.update_config, []

    def die_on_release(loc, updates, read_version):
        calls.append(updates)
        if journal.FOLDED in updates:
            raise _Died()
        return real(loc, updates, read_version)

    monkeypatch.setattr(writes, "update_config", die_on_release)
    with pytest.raises(_Died):
        fold.fold(run.location)
    monkeypatch.undo()
    assert _raw(run, "trajectories") == 16 and fold.stats(run.location)["trajectories"] == -1
    assert _reads(run) == before  # rows in the table past FOLDED are not read twice
    assert fold.fold(run.location)["trajectories"] == 0  # the dead fold's claim holds for its lease
    monkeypatch.setattr(fold, "LEASE_S", 0.0)
    fold.fold(run.location)
    assert _raw(run, "trajectories") == 16  # the logs it had appended were not appended again
    assert _reads(run) == before


_FOLDER = """
import sys, time, random
from artstore.log import fold
from artstore.storage import datasets, scans, writes
real = writes.append
def slow(*a, **k):
    time.sleep(random.random() * 0.3)
    out = real(*a, **k)
    time.sleep(random.random() * 0.3)
    return out
writes.append = slow
fold.LEASE_S = 0.0
print("ready", flush=True)
fold.fold(__import__("artstore").open_store(sys.argv[1]).run("p", "m").location)
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_any_point_of_a_fold_loses_and_doubles_nothing(tmp_path):
    model = _model(str(tmp_path))
    run = model.run
    rng = random.Random(7)
    for trial in range(6):
        for step in range(trial * 4, trial * 4 + 4):
            _log(model, step)
        assert run.wait_for_upkeep(60)  # no live fold here: the killed ones' claims are taken over at once
        expected = _reads(run)
        proc = subprocess.Popen([sys.executable, "-c", _FOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.random() * 1.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _reads(run) == expected, f"trial {trial}"
    fold.LEASE_S, lease = 0.0, fold.LEASE_S
    try:
        fold.fold(run.location)
    finally:
        fold.LEASE_S = lease
    assert _reads(run) == expected
    assert _raw(run, "trajectories") == run.trajectories().num_rows  # nothing copied twice


def test_a_run_from_before_the_journal_keeps_writing_its_data_tables(tmp_path):
    model = _model(str(tmp_path))
    old = pa.schema([f for f in arrow_schema("logs") if f.name not in journal.PAYLOAD_COLUMNS])
    writes.create(model.run.table_location("logs"), old.empty_table())  # as an older artstore made it
    for step in range(3):
        _log(model, step)
    run = model.run
    assert _raw(run, "trajectories") == 6 and _raw(run, "metrics") == run.metrics().num_rows
    assert fold.fold(run.location) == {}
    assert run.trajectories().num_rows == 6 and run.history().num_rows == 3
    assert art.open_store(str(tmp_path)).sql(VIEWS[0]).num_rows == 3


def test_compaction_drops_folded_payloads_and_a_reader_that_missed_the_fold_reads_the_table(tmp_path):
    model = _model(str(tmp_path))
    for step in range(10):
        _log(model, step)
    run = model.run
    before = _reads(run)
    run.compact()  # folds, then compacts the journal: the folded logs' payloads go
    stored = scans.scan(run.table_location("logs"), columns=["trajectories_ipc", "groups_ipc", "metric_names"])
    assert stored["trajectories_ipc"].null_count == stored["groups_ipc"].null_count == 10
    assert stored["metric_names"].null_count == 0  # history reads these
    assert _reads(run) == before
    # A reader that saw the tables before the fold takes these logs for unfolded: it finds their
    # payloads gone and reads their rows from the tables.
    for t in ("trajectories", "groups", "metrics"):
        loc = run.table_location(t)
        writes.update_config(loc, {journal.FOLDED: "-1"}, datasets.latest_version(loc))
    assert _reads(run) == before


def test_a_filter_on_row_columns_reads_unfolded_logs_as_folded_ones(tmp_path):
    model = _model(str(tmp_path))
    for step in range(6):
        _log(model, step)
    run = model.run

    def reads() -> tuple:
        gid = run.read_table("groups")["group_id"][2].as_py()
        return (run.read_table("metrics", filter="name IN ('val/reward', 'train/loss')", columns=["step", "name", "value"]),
                run.read_table("groups", filter=f"group_id = '{gid}'").num_rows,
                run.read_table("trajectories", filter="step >= 2 AND reward > 0.3", columns=["step", "reward"]))

    before = reads()
    assert before[0].num_rows == 6 and before[1] == 1 and before[2].num_rows == 5
    fold.fold(run.location)
    assert reads() == before


def test_a_payload_reads_back_equal_whether_written_now_or_as_an_ipc_stream_before():
    """Payloads are one zstd frame of the whole IPC stream (to_ipc); journals written before hold
    plain IPC streams, with or without Arrow's per-buffer compression: all three read back equal."""
    model_rows = arrow_schema("groups").empty_table()
    rows = pa.Table.from_pylist([{**{f.name: None for f in model_rows.schema}, "log_id": "l", "write_id": "w",
                                  "group_id": f"l:{i}", "group_index": i, "split": "val", "step": 3}
                                 for i in range(5)], schema=model_rows.schema)
    framed = journal.to_ipc(rows)
    assert framed[:4] == b"ASZ1" and journal.from_ipc(framed).equals(rows)
    for options in (None, pa.ipc.IpcWriteOptions(compression="zstd")):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rows.schema, options=options) as w:
            w.write_table(rows)
        assert journal.from_ipc(sink.getvalue().to_pybytes()).equals(rows)
    assert journal.to_ipc(rows.slice(0, 0)) is None


def test_two_folders_creating_a_new_runs_tables_at_once_double_nothing_and_warn_nothing(tmp_path, monkeypatch, caplog):
    # A creates the first table, then stalls; B, finding that table made and the others not,
    # claims it, folds and creates the others; A then goes on and finds its fold point set first.
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="sync")
    for step in range(8):  # fewer versions than FOLD_EVERY: no fold yet, no data table
        _log(model, step)
    run = model.run
    model.run.wait_for_upkeep(60)
    before = _reads(run)
    assert _raw(run, "trajectories") == 0
    a_created, b_done = threading.Event(), threading.Event()
    real_create = writes.create
    a_thread: list[int] = []

    def create(loc, *args, **kwargs):
        version = real_create(loc, *args, **kwargs)
        if threading.get_ident() in a_thread and not a_created.is_set():
            a_created.set()
            assert b_done.wait(60)
        return version

    monkeypatch.setattr(writes, "create", create)

    def fold_a():
        a_thread.append(threading.get_ident())
        fold.fold(run.location)

    caplog.set_level("INFO", logger="artstore")
    a = threading.Thread(target=fold_a)
    a.start()
    assert a_created.wait(60)
    fold.fold(run.location)  # B
    b_done.set()
    a.join(60)
    assert not a.is_alive()
    monkeypatch.undo()
    assert [r for r in caplog.records if r.levelno >= 30] == []  # nothing printed: the next fold settles it
    assert _reads(run) == before
    fold.fold(run.location)
    assert _reads(run) == before
    assert all(seq >= 0 for seq in fold.stats(run.location).values())
    assert _raw(run, "trajectories") == run.trajectories().num_rows  # nothing copied twice


def _with_a_fragment_of_three_logs(base: str) -> art.Model:
    """A run "b" of one log (step 0), then one commit of a fragment holding three logs (steps 1-3,
    logged to a run "a" of another store and copied): what a group commit of one fragment per batch
    would leave."""
    model = art.Model(name="b", project="p", base_path=base, report_metrics=[], commit="sync")
    _log(model, 0)
    source = art.Model(name="a", project="p", base_path=os.path.join(base, "source"), report_metrics=[], commit="sync")
    for step in range(1, 4):
        _log(source, step)
    logs = model.run.table_location("logs")
    rows = scans.scan(source.run.table_location("logs"))
    assert rows.num_rows == 3
    fragments = writes.write_files(logs, rows.select(datasets.open_dataset(logs).schema.names))
    assert len(fragments) == 1  # the three logs in one fragment
    writes.commit_files(logs, fragments, datasets.open_dataset(logs).schema, "three logs, one commit")
    return model


def test_logs_of_one_fragment_read_in_their_order_before_and_after_compaction_and_as_of(tmp_path):
    model = _with_a_fragment_of_three_logs(str(tmp_path))
    run = model.run
    versions = [v["version"] for v in run.versions()]
    assert run.logs()["step"].to_pylist() == [0, 1, 2, 3]  # commit order: the fragment's rows in place
    assert [g.trajectories[0].reward for s in (1, 2, 3) for g in run.groups(step=s)] == \
        [g.trajectories[0].reward for s in (1, 2, 3) for g in art.open_store(str(tmp_path / "source")).run("p", "a").groups(step=s)]
    before = _reads(run)
    assert run.trajectories(as_of=versions[-2])["step"].to_pylist() == [0, 0]  # before the commit of three
    fold.fold(run.location)
    run.compact()  # folds, drops payloads and rewrites the journal's fragments with their sequence
    fresh = art.open_store(str(tmp_path)).run("p", "b")
    assert fresh.logs()["step"].to_pylist() == [0, 1, 2, 3]
    assert _reads(fresh) == before
    assert fresh.trajectories(as_of=versions[-2])["step"].to_pylist() == [0, 0]


def test_a_fold_cut_by_max_logs_never_splits_a_fragment_of_several_logs(tmp_path):
    # Group commits write one row per fragment today; a fragment of several logs (one commit, one
    # sequence) must still be folded whole, or FOLDED would name logs the fold never appended.
    model = _with_a_fragment_of_three_logs(str(tmp_path))
    run = model.run
    model.run.wait_for_upkeep(60)
    before = run.trajectories().num_rows
    assert before == 4 * 2
    fold.fold(run.location, max_logs=2)  # the cut falls inside the fragment of three
    assert run.trajectories().num_rows == before
    assert art.open_store(str(tmp_path)).run("p", "b").trajectories().num_rows == before
    fold.fold(run.location)
    run.compact()  # drops the payloads of folded logs
    fresh = art.open_store(str(tmp_path)).run("p", "b")
    assert fresh.trajectories().num_rows == before
    assert sorted(fresh.logs()["step"].to_pylist()) == [0, 1, 2, 3]
