"""Reads beside group commit (`artstore.log.group_commit`): `Run.history()` in the writing process
takes its logs still queued as they are, without waiting for their commit, and answers what it
answers once they are committed; the barrier hook (`artstore.storage.barrier`) looks for a killed
writer's pending files once per read and at most once per `RECHECK_S` per run, and still commits
them."""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

import artstore as art
from artstore.log import batch_commit, group_commit, pending_recovery, run_committer
from artstore.storage import keys, pending, scans
from tests.test_latest_logs import (
    ROOT,
    _assert_same_as_fresh,
    _count_reads,
    _log_in_another_process,
)


def _model(base: str, name: str, **kw) -> art.Model:
    return art.Model(name=name, project="p", base_path=base, report_metrics=[], **kw)


def _log(model: art.Model, steps: range) -> None:
    for step in steps:
        model.log_sync(None, split="train" if step % 3 else "val", step=step,
                       metrics={"x": float(step), **({"new": 1.0} if step == 5 else {})})


def _history(model: art.Model) -> list[dict]:
    h = model.history()
    return h.drop_columns(["recorded_at"]).to_pylist()


def _read_group_model(base: str) -> art.Model:
    """A group-mode model of two committed logs whose history this process has read once."""
    model = _model(base, "m", commit="group")
    _log(model, range(2))
    model.flush()
    assert model.history().num_rows == 2
    return model


def _queued(model: art.Model) -> int:
    return len(group_commit.queued(model.run.table_location("logs")))


def test_history_right_after_group_logs_takes_the_queued_logs_without_waiting(tmp_path, monkeypatch):
    sync, group = _model(str(tmp_path), "sync"), _model(str(tmp_path), "group", commit="group")
    for model in (sync, group):
        _log(model, range(3))
        model.flush()
        assert model.history().num_rows == 3  # kept: what follows extends it
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(run_committer, "GATHER_S", 30.0)  # a commit only when a read or flush waits for it
    try:
        for model in (sync, group):
            _log(model, range(3, 8))  # (step 5 adds a metric)
        assert _history(group) == _history(sync)
        assert _queued(group) == 5  # nothing waited for the commit
        assert _history(group) == _history(sync)  # the same answer again, kept
        assert reads == []
    finally:
        group.flush()  # (a waiter cuts the gathering short)
    assert _queued(group) == 0
    assert _history(group) == _history(sync)
    _assert_same_as_fresh(group.run)


def test_another_process_log_after_queued_group_logs_is_read_in_its_place(tmp_path, monkeypatch):
    model = _read_group_model(str(tmp_path))
    monkeypatch.setattr(run_committer, "GATHER_S", 30.0)
    try:
        _log(model, range(2, 4))  # queued
        _log_in_another_process(tmp_path)  # committed first, recorded after ours: ours are not last
        history = model.history()  # so this waits for ours to be committed, and reads the other's row
        assert history["step"].to_pylist() == [0, 1, 2, 3, 11]
        assert history["val/other"].to_pylist()[-1] == 3.0
        _log(model, range(4, 6))  # queued again, after every committed log: taken as they are
        assert model.history()["step"].to_pylist() == [0, 1, 2, 3, 11, 4, 5]
        assert _queued(model) == 2
    finally:
        model.flush()
    _assert_same_as_fresh(model.run)


def test_queued_logs_committed_while_read_are_counted_once(tmp_path, monkeypatch):
    model = _read_group_model(str(tmp_path))
    monkeypatch.setattr(run_committer, "GATHER_S", 30.0)
    _log(model, range(2, 5))
    queued = group_commit.queued(model.run.table_location("logs"))
    model.flush()  # committed after the read took the queue, before it takes the snapshot
    monkeypatch.setattr(group_commit, "queued", lambda logs: list(queued))
    history = model.history()
    assert history["step"].to_pylist() == [0, 1, 2, 3, 4]
    _assert_same_as_fresh(model.run)


# -- the barrier hook: a killed writer's pending files -------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_each_read_looks_for_pending_files_once_and_lists_them_only_when_the_folder_changed(tmp_path, monkeypatch):
    model = _model(str(tmp_path), "m", commit="sync")  # nothing of this process changes the pending folder
    _log(model, range(2))
    model.history()
    dues, lists = [], []
    real_due, real_names = pending_recovery.due, pending.names
    monkeypatch.setattr(pending_recovery, "due", lambda *a: dues.append(1) or real_due(*a))
    monkeypatch.setattr(pending, "names", lambda *a: lists.append(1) or real_names(*a))
    monkeypatch.setattr(pending_recovery, "RECHECK_S", 60.0)
    for step in range(2, 6):
        _log(model, range(step, step + 1))
        dues.clear()
        assert model.history().num_rows == step + 1
        assert len(dues) == 1  # one barrier check per read (not one per open of the journal)
    assert lists == []  # looked at before, the folder unchanged since: not listed again


def test_a_killed_writers_pending_log_is_committed_by_a_reader_that_looked_moments_before(tmp_path, monkeypatch):
    monkeypatch.setattr(pending_recovery, "RECHECK_S", 60.0)  # the folder's change, not the clock, says look
    model = _model(str(tmp_path), "m")
    _log(model, range(2))
    assert model.history().num_rows == 2  # the run was looked at: no pending file of another writer
    time.sleep(0.15)  # past _FRESH_NS: only the folder's changed stamp can say look again
    run = model.run.location
    rows = scans.scan(run.child("logs.lance"))
    lost = rows.filter(pc.equal(rows["step"], 1)).to_pylist()[0]
    lost.update(log_id="lost", write_id="w" * 32, step=9, **{keys.SEQ: None})
    pending.write(run, f"{pending.HOST}-{_dead_pid()}-{'w' * 32}.arrow", pa.Table.from_pylist([lost], rows.schema))
    assert model.history()["step"].to_pylist() == [0, 1, 9]  # committed at this read, then read
    assert pending.names(run) == []
    code = "import sys, artstore as art; print(art.open_store(sys.argv[1]).run('p', 'm').logs().num_rows)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip() == "3"


# -- own rows committed but not folded in yet are made from their records ------------------------

def test_a_read_between_a_group_commit_and_its_notes_reads_nothing_back(tmp_path, monkeypatch):
    model = _read_group_model(str(tmp_path))
    reads, seen = _count_reads(monkeypatch), []
    real_tell = batch_commit._tell

    def tell_after_a_read(*args):  # the commit landed; its rows are not told to the kept reads yet
        seen.append(model.history()["step"].to_pylist())
        real_tell(*args)

    monkeypatch.setattr(batch_commit, "_tell", tell_after_a_read)
    _log(model, range(2, 5))
    model.flush()
    assert seen and all(steps == list(range(len(steps))) for steps in seen)
    assert seen[-1] == [0, 1, 2, 3, 4]
    assert reads == []  # the landed rows were made from the batch's records
    _assert_same_as_fresh(model.run)


def test_own_noted_logs_not_folded_are_made_from_their_records(tmp_path, monkeypatch):
    from artstore.read import log_notes

    model = _model(str(tmp_path), "m")
    _log(model, range(2))
    assert model.history().num_rows == 2
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(log_notes, "fold", lambda loc: None)  # the notes stay: the read extends by them
    _log(model, range(2, 5))
    assert model.history()["step"].to_pylist() == [0, 1, 2, 3, 4]
    assert reads == []
    _assert_same_as_fresh(model.run)


def test_the_committer_folds_its_rows_and_extends_the_kept_history_before_any_read(tmp_path):
    from artstore.read import log_snapshot

    model = _read_group_model(str(tmp_path))  # a history kept: the committer extends it
    _log(model, range(2, 6))
    model.flush()
    snapshot = log_snapshot.kept(model.run.table_location("logs").uri)
    assert snapshot.derived["history"]["step"].to_pylist() == [0, 1, 2, 3, 4, 5]  # folded, made before this read
    assert model.history() is snapshot.derived["history"]
    _assert_same_as_fresh(model.run)
