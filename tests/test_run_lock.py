"""Locks shared by the writer processes of one run (`artstore.storage.run_lock`): group commits of
one host take turns at the journal, and one process at a time compacts a table; a lock held by a
process that was killed is free again at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

import artstore as art
from artstore.errors import StorageError
from artstore.log import group_commit, idle_fold, inline_upkeep, upkeep
from artstore.storage import Location, fragments, run_lock
from tests.conftest import tool_call_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _holder(run: Location, name: str) -> subprocess.Popen:
    """A process holding the lock `name` of the run at `run` until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from artstore.storage import Location, run_lock
        with run_lock.held(Location({run.uri!r}), {name!r}) as mine:
            print("held" if mine else "refused", flush=True)
            time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _kill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def _group(step: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(j / 4, step * 100 + j) for j in range(4)])


def _model(base: str, **kw) -> art.Model:
    return art.Model(name="m", project="p", base_path=base, report_metrics=[], **kw)


def test_a_lock_another_process_holds_is_refused_without_waiting_and_free_once_that_process_is_killed(tmp_path):
    run = Location(str(tmp_path / "run"))
    holder = _holder(run, "logs.compact")
    try:
        with run_lock.held(run, "logs.compact", wait=False) as mine:
            assert not mine
        with run_lock.held(run, "logs.commit", wait=False) as mine:  # another lock of the run is free
            assert mine
    finally:
        _kill(holder)
    with run_lock.held(run, "logs.compact", wait=False) as mine:
        assert mine


def test_a_bucket_run_takes_no_lock():
    with run_lock.held(Location("s3://bucket/run"), "logs.commit", wait=False) as mine:
        assert mine


def test_a_group_commit_waits_for_the_commit_lock_another_writer_holds(tmp_path):
    model = _model(str(tmp_path), commit="group")
    model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    holder = _holder(model.run.location, "logs.commit")
    try:
        record = model.log_sync([_group(1)], split="train", step=1)
        assert record.created
        with pytest.raises(StorageError, match="not committed within"):
            group_commit.flush(model.run.location, timeout=1.0)
    finally:
        _kill(holder)
    model.flush()
    assert model.history()["step"].to_pylist() == [0, 1]


def test_a_journal_compaction_is_left_to_the_process_that_compacts_it(tmp_path, monkeypatch):
    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10_000)  # no compaction while logging
    monkeypatch.setattr(idle_fold, "FOLD_IDLE_S", 3600.0)  # nor a fold (its payload drop waits for the lock)
    model = _model(str(tmp_path), commit="sync")  # one fragment per log
    for step in range(20):
        model.log_sync([_group(step)], split="train", step=step)
    upkeep.wait(model.run.location, timeout=60)
    logs = model.run.location.child("logs.lance")
    before = fragments.fragment_count(logs)
    assert before >= 20
    holder = _holder(model.run.location, "logs.compact")
    try:
        upkeep.request(logs, "logs", timedelta(days=7), compact=True)
        assert upkeep.wait(model.run.location, timeout=60)
        assert fragments.fragment_count(logs) == before  # the holder's to do: skipped, not waited for
    finally:
        _kill(holder)
    upkeep.request(logs, "logs", timedelta(days=7), compact=True)
    assert upkeep.wait(model.run.location, timeout=60)
    assert fragments.fragment_count(logs) < before
    assert model.history()["step"].to_pylist() == list(range(20))


def test_a_writer_holding_the_commit_lock_forever_delays_other_commits_but_never_blocks_them(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "MAX_WAIT_S", 0.5)
    model = _model(str(tmp_path), commit="group")
    model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    holder = _holder(model.run.location, "logs.commit")  # e.g. stopped in a debugger
    try:
        model.log_sync([_group(1)], split="train", step=1)
        group_commit.flush(model.run.location, timeout=60)  # committed unlocked, after the wait
        assert holder.poll() is None
        assert art.open_store(str(tmp_path)).run("p", "m").history()["step"].to_pylist() == [0, 1]
    finally:
        _kill(holder)
