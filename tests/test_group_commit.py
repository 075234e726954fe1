"""Group commit (`Model(commit="group")`, `artstore.log.group_commit`): log() returns once its row
is durable; a committer thread appends the queued rows in few commits. Reads in the writing
process see every returned log; a killed writer's rows are committed by the next process to open
the run; a row committed twice counts once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import artstore as art
from artstore.log import fold, group_commit, run_committer, upkeep
from artstore.records.metrics_builder import STATE_KEY
from artstore.storage import Location, datasets, keys, pending, scans, transactions, writes
from tests.conftest import tool_call_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _group(step: int, n: int = 4) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(j / n, step * 100 + j) for j in range(n)])


def _model(base: str, name: str, **kw) -> art.Model:
    return art.Model(name=name, project="p", base_path=base, report_metrics=[], **kw)


def _history(model: art.Model) -> list[dict]:
    h = model.history()
    return h.drop_columns([c for c in h.column_names if c == "recorded_at" or c.startswith("time/")]).to_pylist()


def _group_commits(run: Location) -> int:
    loc = run.child("logs.lance")
    messages = transactions.commit_messages(loc, [v["version"] for v in datasets.versions(loc)])
    return sum(1 for m in messages.values() if m.startswith("group commit"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_group_log_is_read_back_in_the_same_process_right_after_log_returns(tmp_path, monkeypatch):
    # the row is still queued at the read: only the read or a flush cuts the gathering short (0.3 s
    # ran out on a loaded machine before the checks below, the row already committed)
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    model = _model(str(tmp_path), "m", commit="group")
    record = model.log_sync([_group(1)], split="train", step=1)
    assert record.created and record.logs_version is None
    assert pending.names(model.run.location)  # not committed yet: the read below must wait for it
    assert model.history()["step"].to_pylist() == [1]
    assert model.run.logs()["log_id"].to_pylist() == [record.log_id]
    assert model.run.trajectories(step=1).num_rows == 4
    got = art.open_store(str(tmp_path)).sql("SELECT count(*) AS n FROM trajectories WHERE step = 1")["n"].to_pylist()
    assert got == [4]
    assert pending.names(model.run.location) == []  # committed, its pending file gone


def test_group_is_the_default_mode_and_sync_the_opt_out(tmp_path, monkeypatch):
    monkeypatch.delenv(group_commit.ENV, raising=False)
    assert group_commit.mode() == "group"
    monkeypatch.setenv(group_commit.ENV, "sync")
    assert group_commit.mode() == "sync" and group_commit.mode("group") == "group"
    sync = _model(str(tmp_path), "env-sync")  # no commit= given: the environment's mode
    record = sync.log_sync([_group(1)], split="train", step=1)
    assert not record.queued and record.logs_version == sync.run.versions()[-1]["version"]
    monkeypatch.delenv(group_commit.ENV)
    default = _model(str(tmp_path), "default")
    assert default.log_sync([_group(1)], split="train", step=1).queued


def test_a_queued_logs_record_tells_its_version_once_committed_and_as_of_it_holds_the_log(tmp_path, monkeypatch):
    # the three logs share one group commit: gathered until the flush (0.3 s, a slow log split them)
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    model = _model(str(tmp_path), "m", commit="group")
    first = model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    records = [model.log_sync([_group(step)], split="train", step=step) for step in (1, 2, 3)]
    assert [r.logs_version for r in records] == [None, None, None]  # queued: no version yet
    model.flush()
    versions = {r.logs_version for r in records}
    assert len(versions) == 1 and first.logs_version is not None
    (version,) = versions
    assert version > first.logs_version
    assert version in [v["version"] for v in model.run.versions()]
    assert model.run.logs(as_of=version)["log_id"].to_pylist() == [first.log_id, *(r.log_id for r in records)]
    assert model.run.logs(as_of=first.logs_version)["log_id"].to_pylist() == [first.log_id]
    assert model.run.trajectories(as_of=first.logs_version).num_rows == 4
    assert model.run.trajectories(as_of=version).num_rows == 16


def test_quick_group_logs_make_fewer_commits_and_read_exactly_as_sync_logs(tmp_path, monkeypatch):
    # quick: within the gathering, which only the flush cuts short (0.05 s: under load every log
    # outlasted it, one commit each)
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    sync, group = _model(str(tmp_path), "sync", commit="sync"), _model(str(tmp_path), "group", commit="group")
    n = 16
    for model in (sync, group):
        for step in range(n):
            model.metrics_builder("train").add_cost("train/judge", 0.25)
            model.log_sync([_group(step)], split="train" if step % 3 else "val", step=step)
    group.flush()
    assert 0 < _group_commits(group.run.location) < n
    assert _group_commits(sync.run.location) == 0
    assert _history(group) == _history(sync)
    for step in (0, 7, n - 1):
        a, b = sync.run.trajectories(step=step), group.run.trajectories(step=step)
        assert a.drop_columns(["log_id", "write_id", "trajectory_id", "group_id", "recorded_at"]).equals(
            b.drop_columns(["log_id", "write_id", "trajectory_id", "group_id", "recorded_at"]))
    store = art.open_store(str(tmp_path))
    per_model = store.sql("SELECT model, split, step, count(*) AS n, sum(reward) AS r FROM trajectories "
                          "GROUP BY ALL ORDER BY step, model").to_pylist()
    by = {(r["model"], r["step"]): (r["split"], r["n"], r["r"]) for r in per_model}
    assert all(by[("group", s)] == by[("sync", s)] for s in range(n))
    assert group.read_state()[STATE_KEY] == sync.read_state()[STATE_KEY]
    upkeep.wait()
    for model in (sync, group):  # folded, the same again
        fold.fold(model.run.location)
    assert _history(group) == _history(sync)
    assert group.run.trajectories().num_rows == sync.run.trajectories().num_rows == 4 * n


def test_a_retried_log_id_is_stored_once_whether_queued_or_committed(tmp_path, monkeypatch):
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)  # the first is still queued at the retry, however slow
    model = _model(str(tmp_path), "m", commit="group")
    first = model.log_sync([_group(1)], split="train", step=1, log_id="given")
    queued_retry = model.log_sync([_group(1)], split="train", step=1, log_id="given")  # still queued
    model.flush()
    committed_retry = model.log_sync([_group(1)], split="train", step=1, log_id="given")
    assert first.created and not queued_retry.created and not committed_retry.created
    assert model.run.logs()["log_id"].to_pylist() == ["given"]
    assert model.read_state()[STATE_KEY]["cum_state"]["data/cum/num_trajectories"] == 4


def test_a_group_models_running_sums_count_another_writers_committed_logs(tmp_path):
    a, b = _model(str(tmp_path), "m", commit="group"), _model(str(tmp_path), "m", commit="group")
    for step, m in enumerate((a, b, a, a)):
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        record = m.log_sync(None, split="train", step=step, metrics={"loss": float(step)})
        m.flush()
    # a's third log follows the commit holding b's log (not its own): it reads it, then counts on
    assert record.metrics["costs/cum/all"] == 4.0
    assert a.read_state()[STATE_KEY]["cum_state"]["costs/cum/all"] == 4.0


def test_threads_racing_to_log_one_id_queue_it_once(tmp_path, monkeypatch):
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)  # all four race the queued row, however slow
    model = _model(str(tmp_path), "m", commit="group")
    with ThreadPoolExecutor(4) as pool:
        records = list(pool.map(lambda _: model.log_sync([_group(1)], split="train", step=1, log_id="same"), range(4)))
    assert sorted(r.created for r in records) == [False, False, False, True]
    model.flush()
    assert model.run.logs()["log_id"].to_pylist() == ["same"]
    assert scans.count_rows(model.run.location.child("logs.lance")) == 1


def test_a_row_committed_twice_and_a_recovered_row_count_once_everywhere(tmp_path):
    model = _model(str(tmp_path), "m", commit="group")
    for step in range(3):
        model.log_sync([_group(step)], split="train", step=step)
    model.flush()
    run = model.run.location
    logs = run.child("logs.lance")
    rows = scans.scan(logs)
    again = rows.filter(pc.equal(rows["step"], 1)).drop_columns([keys.SEQ]).append_column(
        keys.SEQ, pa.nulls(1, pa.int64())).select(rows.schema.names)
    # a committer killed after its commit, before deleting the pending file: the row lands again
    writes.append(logs, again.cast(rows.schema), "the same row again")
    # and its pending file, left by a writer that is gone, is found by the next process
    pending.write(run, f"{pending.HOST}-{_dead_pid()}-{again['write_id'][0].as_py()}.arrow", again.cast(rows.schema))
    # a new log whose writer died before its commit
    lost = rows.filter(pc.equal(rows["step"], 2)).to_pylist()[0]
    lost.update(log_id="lost", write_id="w" * 32, step=9, commit_seq=None)
    pending.write(run, f"{pending.HOST}-{_dead_pid()}-{'w' * 32}.arrow", pa.Table.from_pylist([lost], rows.schema))
    assert group_commit.recover(run) == 1  # the new one; the committed one is skipped
    assert pending.names(run) == []
    assert scans.count_rows(logs) == 5  # 3 + the same row again + the recovered one

    fresh = art.open_store(str(tmp_path)).run("p", "m")
    assert sorted(fresh.logs()["step"].to_pylist()) == [0, 1, 2, 9]
    assert fresh.history().num_rows == 4
    assert fresh.trajectories().num_rows == 16
    # 4 logs of 4 (the recovered one adds its delta once more), the row committed twice once
    assert model.read_state()[STATE_KEY]["cum_state"]["data/cum/num_trajectories"] == 16
    upkeep.wait()
    fold.fold(run)
    assert all(seq >= 0 for seq in fold.stats(run).values())  # folded
    assert fresh.trajectories().num_rows == 16
    got = art.open_store(str(tmp_path)).sql("SELECT count(*) AS n FROM trajectories")["n"].to_pylist()
    assert got == [16]


WRITER = textwrap.dedent("""
    import sys
    import artstore as art
    from artstore.log import run_committer
    from tests.conftest import tool_call_trajectory
    base, name, n, gather = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    run_committer.GATHER_S = gather
    model = art.Model(name="m", project="p", base_path=base, report_metrics=[], commit="group")
    for i in range(n):
        g = art.TrajectoryGroup([tool_call_trajectory(j / 4, i * 10 + j) for j in range(4)])
        r = model.log_sync([g], split="train", step=i, log_id=f"{name}-{i}")
        print(r.log_id, r.created, flush=True)
    print("done", flush=True)
    sys.stdin.readline()  # hold until told (the killed writer never is)
""")


def _writer(base: str, name: str, n: int, gather: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "LANCE_LOG": "error"}
    return subprocess.Popen([sys.executable, "-c", WRITER, base, name, str(n), str(gather)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_a_writer_killed_after_log_returned_loses_nothing(tmp_path):
    base = str(tmp_path)
    proc = _writer(base, "k", 12, 30.0)  # commits wait 30 s to gather: every row is pending at the kill
    acked = []
    for line in proc.stdout:
        if line.startswith("done"):
            break
        acked.append(line.split()[0])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) == 12
    run = Location.parse(base).child("p", "models", "m")
    assert len(pending.names(run)) >= 11  # (the first log may have committed before the gathering began)
    logs = art.open_store(base).run("p", "m").logs()  # the first open commits the dead writer's rows
    assert sorted(logs["log_id"].to_pylist()) == sorted(acked)
    assert pending.names(run) == []
    assert art.open_store(base).run("p", "m").trajectories().num_rows == 48


@pytest.mark.slow
def test_group_writer_processes_lose_and_duplicate_nothing(tmp_path):
    base, writers, n = str(tmp_path), 3, 10
    procs = [_writer(base, f"w{k}", n, 0.0) for k in range(writers)]
    results = []
    for p in procs:
        out, err = p.communicate("\n", timeout=300)
        assert p.returncode == 0, err
        results += [line.split() for line in out.splitlines() if line != "done"]
    assert len(results) == writers * n and all(created == "True" for _, created in results)
    run = art.open_store(base).run("p", "m")
    run.validate()
    ids = run.logs()["log_id"].to_pylist()
    assert sorted(ids) == sorted(log_id for log_id, _ in results)  # nothing lost, nothing twice
    assert run.trajectories().num_rows == 4 * writers * n
    assert pending.names(run.location) == []  # each writer committed its own at exit
    state = art.Model(name="m", project="p", base_path=base, report_metrics=[]).read_state()
    assert state[STATE_KEY]["cum_state"]["data/cum/num_trajectories"] == 4 * writers * n


def test_a_group_log_round_trips_on_the_store(store_location):
    model = store_location.model(commit="group")
    record = model.log_sync([_group(3)], split="val", step=3)
    assert model.history()["step"].to_pylist() == [3]
    model.flush()
    run = store_location.store().run("test-project", "test-model")
    assert run.logs()["log_id"].to_pylist() == [record.log_id]
    assert run.trajectories().num_rows == 4
    model.run.wait_for_upkeep(60)  # a bucket deletes committed pending files in batches (pending_deletes)
    assert pending.names(run.location) == []


def test_commit_mode_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv(group_commit.ENV, "group")
    assert group_commit.mode() == "group" and group_commit.mode("sync") == "sync"
    monkeypatch.setenv(group_commit.ENV, "later")
    with pytest.raises(art.ValidationError, match="commit"):
        group_commit.mode()


# -- the committer notes its rows in the kept reads (`latest_logs`, `step_summary`) ----------------

def _log_group_steps(model: art.Model, steps: range) -> None:
    for step in steps:
        model.log_sync([_group(step)], split="train" if step % 3 else "val", step=step, metrics={"x": float(step)})


def test_history_after_own_group_logs_equals_sync_and_reads_nothing(tmp_path, monkeypatch):
    from artstore.read import latest_logs, step_summary
    from tests.test_latest_logs import _assert_same_as_fresh, _count_reads

    # batches of several rows (one version, many notes): gathered until a flush (0.2 s: under load
    # each log outlasted it, one commit each, and the count below failed)
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    sync, group = _model(str(tmp_path), "sync", commit="sync"), _model(str(tmp_path), "group", commit="group")
    for model in (sync, group):
        _log_group_steps(model, range(2))
        model.flush()
        model.history()
        model.run.step_summary()  # kept: the notes extend it
    reads, summary_reads = _count_reads(monkeypatch), []
    real_committed = step_summary.committed_logs
    monkeypatch.setattr(step_summary, "committed_logs", lambda *a, **k: summary_reads.append(1) or real_committed(*a, **k))
    for model in (sync, group):
        _log_group_steps(model, range(2, 10))
    group.flush()
    assert _group_commits(group.run.location) < 10  # some commit held several of the rows
    got = _history(group)
    assert reads == []  # the kept logs were extended by the noted rows, nothing read back
    assert got == _history(sync)
    snapshot = latest_logs.latest(group.run.table_location("logs"))
    assert snapshot.version == group.run.versions()[-1]["version"]
    assert group.run.step_summary().means("train/x") == sync.run.step_summary().means("train/x")
    assert reads == [] and summary_reads == []
    _assert_same_as_fresh(group.run)


def test_another_process_log_between_two_group_commits_is_seen(tmp_path, monkeypatch):
    from tests.test_latest_logs import _assert_same_as_fresh, _count_reads, _log_in_another_process

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="group")
    _log_group_steps(model, range(2))
    model.flush()
    assert model.history().num_rows == 2
    reads = _count_reads(monkeypatch)
    _log_in_another_process(tmp_path)  # committed between our two batches
    _log_group_steps(model, range(2, 4))
    model.flush()
    history = model.history()
    assert reads  # our notes do not cover the other row: the kept logs were read up to date
    assert history.num_rows == 5 and history["val/other"].to_pylist().count(3.0) == 1
    assert history["step"].to_pylist() == [0, 1, 11, 2, 3]
    summary = model.run.step_summary()
    assert summary.means("val/other") is not None
    _assert_same_as_fresh(model.run)
