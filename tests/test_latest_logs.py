"""Reads from the latest-logs snapshot (`artstore.read.latest_logs`) answer exactly what a fresh
read of the run answers: history(), logs() and one step's groups, as the run grows, after a fold
and a compaction, when another process logs, and when the run is deleted and logged again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import artstore as art
from artstore.read import latest_logs, log_notes, payload_cache
from artstore.storage import compaction, datasets

ROOT = Path(__file__).resolve().parent.parent


def _log_steps(model: art.Model, make_trajectory, steps: range, **metrics: float) -> None:
    for step in steps:
        for split in ("train", "val"):
            group = art.TrajectoryGroup([make_trajectory(0.1 * step + j, step * 10 + j) for j in range(3)])
            model.log_sync([group], split=split, step=step, metrics={**metrics, f"{split}_extra": float(step)})


def _latest_version(run: art.Run) -> int:
    return run.versions()[-1]["version"]


def _fresh(run: art.Run) -> tuple:
    """history, logs and every step's groups, read as of the latest version (no snapshot)."""
    version = _latest_version(run)
    logs = run.logs(as_of=version)
    steps = sorted(set(logs["step"].to_pylist()))
    groups = {(split, s): [g.model_dump() for g in run.groups(split=split, step=s, as_of=version)]
              for s in steps for split in ("train", "val")}
    return run.history(as_of=version), logs, groups


def _latest(run: art.Run, steps: list[int]) -> tuple:
    groups = {(split, s): [g.model_dump() for g in run.groups(split=split, step=s)]
              for s in steps for split in ("train", "val")}
    return run.history(), run.logs(), groups


def _assert_same_as_fresh(run: art.Run) -> None:
    history, logs, groups = _fresh(run)
    got_history, got_logs, got_groups = _latest(run, sorted({s for _, s in groups}))
    assert got_history.equals(history)
    assert got_history.schema.names == history.schema.names
    assert got_logs.equals(logs)
    assert got_groups == groups


def test_history_logs_and_step_reads_equal_a_fresh_read_as_the_run_grows(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(3))
    _assert_same_as_fresh(run)
    _log_steps(model, make_trajectory, range(3, 5), later=1.0)  # a new metric: a new history column
    _assert_same_as_fresh(run)
    assert "train/later" in run.history().column_names
    assert run.history().num_rows == 10


def test_step_reads_after_a_fold_and_compaction_read_the_tables(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(4))
    before = _latest(run, list(range(4)))
    run.compact()  # folds the journal into the tables, then drops the folded payloads
    payload_cache.clear()  # the steps read above would answer from the rows kept of them
    _assert_same_as_fresh(run)
    after = _latest(run, list(range(4)))
    assert after[0].equals(before[0]) and after[1].equals(before[1]) and after[2] == before[2]
    _log_steps(model, make_trajectory, range(4, 6))  # some folded, some in the journal
    _assert_same_as_fresh(run)


def test_a_step_read_is_what_was_logged_in_the_order_logged(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    first = art.TrajectoryGroup([make_trajectory(0.5, i) for i in range(3)])
    second = art.TrajectoryGroup([make_trajectory(0.7, i) for i in range(3, 5)])
    model.log_sync([first, second], split="train", step=7)
    model.log_sync([second], split="train", step=7, metrics={"again": 1.0})
    model.log_sync([first], split="val", step=7)
    got = model.run.groups(split="train", step=7)
    assert [len(g.trajectories) for g in got] == [3, 2, 2]
    assert [t.reward for g in got for t in g.trajectories] == [0.5] * 3 + [0.7] * 4
    assert [len(g.trajectories) for g in model.run.groups(step=7)] == [3, 2, 2, 3]  # train, then val
    assert model.run.groups(split="train", step=8) == []


def _log_in_another_process(base: Path, step: int = 11, metrics: str = "{'other': 3.0}", then: str = "") -> None:
    """One val log of model p/m from a fresh Python process (`then`: code run after it on `m`)."""
    code = ("import sys, artstore as art; m = art.Model(name='m', project='p', base_path=sys.argv[1], "
            f"report_metrics=[]); m.log_sync(None, split='val', step={step}, metrics={metrics}){then}")
    subprocess.run([sys.executable, "-c", code, str(base)], check=True, cwd=ROOT)


def test_another_process_log_is_seen(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    assert run.history().num_rows == 4
    _log_in_another_process(tmp_path)
    history = run.history()
    assert history.num_rows == 5 and history["val/other"].to_pylist()[-1] == 3.0
    _assert_same_as_fresh(run)


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_a_run_deleted_and_logged_again_is_read_afresh(tmp_path, make_trajectory, commit):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    run = model.run
    for step in (1, 2):  # one version each (group: each commit lands before the next log)
        model.log_sync(None, split="val", step=step, metrics={"old": float(step)})
        model.flush()
    assert run.history()["val/old"].to_pylist() == [1.0, 2.0]
    version = _latest_version(run)
    shutil.rmtree(run.location.uri)
    again = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    for step in (5, 6):
        again.log_sync(None, split="val", step=step, metrics={"new": float(step)})
        again.flush()
    assert _latest_version(run) == version  # the same version number, other contents
    history = run.history()
    assert history["step"].to_pylist() == [5, 6] and "val/old" not in history.column_names
    assert history["val/new"].to_pylist() == [5.0, 6.0]


def test_as_of_reads_the_run_as_it_was_beside_the_snapshot(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    then, version = run.history(), _latest_version(run)
    _log_steps(model, make_trajectory, range(2, 4))
    assert run.history(as_of=version).equals(then)
    assert run.history().num_rows == 8
    assert latest_logs.latest(run.table_location("logs")).version == _latest_version(run)


def test_reads_stay_exact_while_the_journal_is_compacted_in_the_background(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    extended = 0
    for start in range(0, 12, 3):
        _log_steps(model, make_trajectory, range(start, start + 3))
        run.wait_for_upkeep()  # the logs table's inline compactions rewrite its recent fragments
        _assert_same_as_fresh(run)
        extended += latest_logs.latest(run.table_location("logs")).appended is not None
    assert extended >= 3
    assert run.history().num_rows == 24


# -- this process's own logs (`log_notes.note_log`) ------------------------------------------

def _count_reads(monkeypatch) -> list[int]:
    """Count the reads of the logs table's rows made for the kept snapshot (`latest_logs._read`)."""
    calls: list[int] = []
    real = latest_logs._read

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(latest_logs, "_read", counted)
    return calls


def _log_steps_waiting(model: art.Model, make_trajectory, steps: range) -> None:
    """As `_log_steps`, letting the background compaction of the journal land after each log, so
    that each next log commits on top of it (the case the notes must see through)."""
    for step in steps:
        for split in ("train", "val"):
            group = art.TrajectoryGroup([make_trajectory(0.1 * step + j, step * 10 + j) for j in range(3)])
            model.log_sync([group], split=split, step=step, metrics={f"{split}_extra": float(step)})
            model.run.wait_for_upkeep()


def test_own_logs_and_compactions_between_them_are_read_from_nothing(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    reads = _count_reads(monkeypatch)
    _log_steps_waiting(model, make_trajectory, range(12))  # 24 logs: the journal is compacted between them
    snapshot = latest_logs.latest(run.table_location("logs"))
    assert snapshot.version == _latest_version(run)
    assert snapshot.unresolved  # rows a compaction moved after they were noted
    _assert_same_as_fresh(run)  # history, logs, and each step's groups (moved rows looked up by write_id)
    _log_steps_waiting(model, make_trajectory, range(12, 16))  # after a history: extended, not made again
    _assert_same_as_fresh(run)
    assert run.history().num_rows == 32
    assert reads == []  # from the run's first log on, nothing was read back


def test_own_logs_noted_after_a_fold_and_payload_drop_read_the_tables(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(4))
    _assert_same_as_fresh(run)
    reads = _count_reads(monkeypatch)
    run.compact()  # folds the journal, rewrites it without the folded payloads
    payload_cache.clear()  # the steps read above would answer from the rows kept of them
    _log_steps(model, make_trajectory, range(4, 6))
    run.wait_for_upkeep()
    _assert_same_as_fresh(run)  # folded logs' groups from the tables, the new ones from their rows
    assert reads == []


def test_another_process_log_between_own_logs_is_read_once(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    assert run.history().num_rows == 4
    reads = _count_reads(monkeypatch)
    _log_in_another_process(tmp_path)
    _log_steps(model, make_trajectory, range(2, 4))  # not noted: the other process's row is not in them
    history = run.history()
    assert reads  # the kept logs were read up to date, once
    assert history.num_rows == 9 and history["val/other"].to_pylist().count(3.0) == 1
    assert history["step"].to_pylist() == [0, 0, 1, 1, 11, 2, 2, 3, 3]
    _assert_same_as_fresh(run)


def test_another_process_log_rewritten_by_a_compaction_is_not_taken_for_a_move(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    _log_steps(model, make_trajectory, range(3))
    assert run.history().num_rows == 6
    _log_in_another_process(tmp_path, then="; m.run.compact()")
    _log_steps(model, make_trajectory, range(3, 4))  # its rows now sit among ours in the compacted fragments
    history = run.history()
    assert history.num_rows == 9 and history["val/other"].to_pylist().count(3.0) == 1
    _assert_same_as_fresh(run)


def test_a_retried_log_id_keeps_the_first_commit(tmp_path, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    model.log_sync(None, split="val", step=1, metrics={"x": 1.0})
    assert run.history().num_rows == 1
    _log_in_another_process(tmp_path, step=2, metrics="{'x': 2.0}, log_id='same'")
    again = model.log_sync(None, split="val", step=2, metrics={"x": 9.0}, log_id="same")  # a retry: stores nothing
    assert again is not None and not again.created
    model.log_sync(None, split="val", step=2, metrics={"x": 9.0}, log_id="same")
    model.log_sync(None, split="val", step=3, metrics={"x": 3.0})
    history = run.history()
    assert history["val/x"].to_pylist() == [1.0, 2.0, 3.0]  # the other process's commit of "same" wins
    assert run.logs()["log_id"].to_pylist().count("same") == 1
    _assert_same_as_fresh(run)


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_a_run_made_again_under_a_writer_is_not_taken_for_a_move(tmp_path, commit):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    run = model.run
    model.log_sync(None, split="val", step=1, metrics={"old": 1.0})
    model.log_sync(None, split="val", step=2, metrics={"old": 2.0})
    assert run.history().num_rows == 2
    model.flush()  # the old run's logs committed before it goes (a queued one would be retried into the new run)
    shutil.rmtree(run.location.uri)
    again = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    for step in range(5, 9):  # as many rows in fragments of the same ids, then one more log
        again.log_sync(None, split="val", step=step, metrics={"new": float(step)})
    history = run.history()
    assert history["step"].to_pylist() == [5, 6, 7, 8] and "val/old" not in history.column_names


def _fragments_read(monkeypatch) -> list[list[int] | None]:
    """The fragment ids each read of the journal by `latest_logs` asked for (None: all)."""
    calls: list[list[int] | None] = []
    real = latest_logs._read
    monkeypatch.setattr(latest_logs, "_read", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k.get(
        "fragment_ids")) or real(*a, **k))
    return calls


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_another_process_log_beside_a_compaction_of_known_rows_reads_only_the_log(tmp_path, make_trajectory,
                                                                                monkeypatch, commit):
    """Another process's log and a compaction of the rows the kept snapshot holds, both since
    it: the versions' transactions tell the appended fragment from the moved rows, so only the
    appended one is read, and every read answers as a fresh one (the moved rows' steps too)."""
    monkeypatch.setenv("ARTSTORE_COMMIT", commit)
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run.wait_for_upkeep()
    assert run.history().num_rows == 4
    loc = run.table_location("logs")
    top = max(f.fragment_id for f in datasets.open_dataset(loc).get_fragments())
    _log_in_another_process(tmp_path, then="; from artstore.log import idle_fold; idle_fold.drop_waiting()")
    ds = datasets.open_dataset(loc)
    known = [f for f in ds.get_fragments() if f.fragment_id <= top]
    if known:  # (group: the other process's own compaction may have moved them already)
        compaction._rewrite_sequenced(loc, ds, [known])  # the rows the snapshot holds, moved
    fragments_now = datasets.open_dataset(loc).get_fragments()
    assert all(f.fragment_id > top for f in fragments_now)
    appended = [f.fragment_id for f in fragments_now if f.count_rows() == 1]  # the other process's log
    assert len(appended) == 1 and sum(f.count_rows() for f in fragments_now) == 5
    calls = _fragments_read(monkeypatch)
    history = run.history()
    assert history.num_rows == 5 and history["val/other"].to_pylist()[-1] == 3.0
    assert calls == [appended]
    _assert_same_as_fresh(run)

# -- the notes are folded at the next read, not on the log path --------------------------------

def test_own_sync_logs_are_only_noted_while_logging_and_folded_at_the_next_read(tmp_path, make_trajectory, monkeypatch):
    # sync: each log() notes its own commit (a group commit's notes come from the committer, per
    # batch: tests/test_group_commit.py)
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="sync")
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    assert run.history().num_rows == 4
    reads, folds = _count_reads(monkeypatch), []
    real_identities = log_notes.fragments.fragment_identities
    monkeypatch.setattr(log_notes.fragments, "fragment_identities",
                        lambda *a: folds.append(1) or real_identities(*a))
    _log_steps(model, make_trajectory, range(2, 6))  # 8 logs: noted, not folded
    assert folds == [] and len(log_notes._NOTES[run.table_location("logs").uri]) == 8
    history = run.history()  # the first read after them folds all 8 at once
    assert len(folds) == 1 and reads == []
    assert history.num_rows == 12 and history["step"].to_pylist() == [s for s in range(6) for _ in range(2)]
    _assert_same_as_fresh(run)


def test_notes_past_the_bound_are_folded_on_the_log_path(tmp_path, make_trajectory, monkeypatch):
    # sync: the log path notes each commit (group mode's notes come from the committer, and a
    # compaction landing between two batches makes the next read fall back to reading: by design)
    monkeypatch.setattr(log_notes, "_MAX_NOTES", 3)
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="sync")
    run = model.run
    reads = _count_reads(monkeypatch)
    for step in range(5):  # 10 logs
        _log_steps(model, make_trajectory, range(step, step + 1))
        assert len(log_notes._NOTES.get(run.table_location("logs").uri, [])) <= 3
    assert run.history().num_rows == 10
    assert reads == []
    _assert_same_as_fresh(run)


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_another_process_log_after_own_noted_logs_reads_only_its_row(tmp_path, make_trajectory, monkeypatch, commit):
    monkeypatch.setenv("ARTSTORE_COMMIT", commit)  # the other process logs in the same mode
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit=commit)
    run = model.run
    _log_steps(model, make_trajectory, range(2))
    assert run.history().num_rows == 4
    _log_steps(model, make_trajectory, range(2, 4))  # noted
    # after them (its quiet run is not folded at its exit: no rewrite of our rows to read)
    _log_in_another_process(tmp_path, then="; from artstore.log import idle_fold; idle_fold.drop_waiting()")
    found = datasets.open_dataset(run.table_location("logs")).to_table(columns=["step"], filter="step = 11",
                                                                        with_row_address=True)
    theirs = found["_rowaddr"][0].as_py() >> 32  # the fragment the other process's log is in
    calls = _fragments_read(monkeypatch)
    history = run.history()
    assert history.num_rows == 9 and history["val/other"].to_pylist()[-1] == 3.0
    assert len(calls) == 1 and calls[0] == [theirs]  # our 8 logs noted: only the other process's fragment is read
    _assert_same_as_fresh(run)
