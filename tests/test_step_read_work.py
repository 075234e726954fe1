"""The work one step read (`Run.groups(split=, step=)` at the latest version) does, counted: a
step read again takes nothing from storage (`payload_cache`), an unchanged run is checked with
one stat (`datasets.versions_stamp`), and a read does not wait for this process's queued logs of
other steps. Each count comes beside the answer it must still equal."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import artstore as art
from artstore.log import batch_commit, group_commit
from artstore.read import latest_logs, payload_cache
from artstore.storage import datasets, fragments, key_columns
from tests.conftest import count_calls

ROOT = Path(__file__).resolve().parent.parent


def _log_steps(model: art.Model, make_trajectory, steps: range) -> None:
    for step in steps:
        for split in ("train", "val"):
            group = art.TrajectoryGroup([make_trajectory(0.1 * step + j, step * 10 + j) for j in range(3)])
            model.log_sync([group], split=split, step=step)
    # The committer's work after its commits (notes of the logs, kept rows) done too: a read waits
    # only for the commit, so when that work was slow (a loaded machine) it landed between two
    # reads whose storage calls a test counts (seen: take_rows 0, latest_stamp 1).
    model.flush()


def _storage_reads(monkeypatch) -> dict[str, int]:
    return count_calls(monkeypatch, (datasets, "open_dataset"), (fragments, "take_rows"), (key_columns, "rows_with"),
                  (latest_logs, "_read"))


def _dumped(run: art.Run, step: int, split: str = "train", **kwargs) -> list[dict]:
    return [g.model_dump() for g in run.groups(split=split, step=step, **kwargs)]


@pytest.fixture(autouse=True)
def _no_kept_payloads():
    payload_cache.clear()
    yield
    payload_cache.clear()


def test_a_step_read_again_takes_nothing_from_storage(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(4))
    run = model.run
    first = _dumped(run, 2)
    assert first == _dumped(run, 2, as_of=run.versions()[-1]["version"])
    reads = _storage_reads(monkeypatch)
    assert _dumped(run, 2) == first
    assert reads == {"open_dataset": 0, "take_rows": 0, "rows_with": 0, "_read": 0}


def test_the_first_step_read_after_own_group_logs_takes_nothing_back(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="group")
    for step in range(3):
        model.log_sync([art.TrajectoryGroup([make_trajectory(0.1 * step + j, j) for j in range(3)])],
                       split="train", step=step)
    model.flush()
    reads = _storage_reads(monkeypatch)
    got = _dumped(model.run, 2)
    assert reads["take_rows"] == reads["rows_with"] == reads["_read"] == 0
    assert got == _dumped(model.run, 2, as_of=model.run.versions()[-1]["version"])
    assert [t["reward"] for g in got for t in g["trajectories"]] == pytest.approx([0.2, 1.2, 2.2])


def test_kept_rows_answer_after_the_journal_dropped_their_payloads(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(4))
    run = model.run
    before = {s: _dumped(run, s) for s in range(4)}
    run.compact()  # folds the journal into the tables, then drops the folded payloads
    fresh = {s: _dumped(run, s, as_of=run.versions()[-1]["version"]) for s in range(4)}
    reads = _storage_reads(monkeypatch)
    assert {s: _dumped(run, s) for s in range(4)} == before == fresh
    assert reads["take_rows"] == reads["rows_with"] == 0  # neither the journal's rows nor the tables'


def test_kept_rows_are_bounded_in_bytes(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    monkeypatch.setattr(payload_cache, "MAX_BYTES", 1)  # nothing fits: each read takes its rows again
    payload_cache.clear()  # the rows the committer kept of its commits, before the bound was lowered
    run = model.run
    first = _dumped(run, 1)
    reads = _storage_reads(monkeypatch)
    assert _dumped(run, 1) == first
    assert reads["take_rows"] == 1


def test_an_unchanged_run_is_checked_with_one_stat_and_a_new_version_is_seen(tmp_path, make_trajectory,
                                                                              monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    run = model.run
    time.sleep(2 * datasets.VERSIONS_TICK_NS / 1e9)  # the folder's mtime is older than a clock tick
    first = _dumped(run, 1)  # confirms the latest version with the folder's stamp taken before
    checks = count_calls(monkeypatch, (datasets, "latest_stamp"), (datasets, "versions_stamp"))
    assert _dumped(run, 1) == first
    assert checks == {"latest_stamp": 0, "versions_stamp": 1}
    # another process's log makes a version: the folder's stamp moves, and the read sees the log
    code = ("import sys, artstore as art; m = art.Model(name='m', project='p', base_path=sys.argv[1], "
            "report_metrics=[]); m.log_sync(None, split='val', step=1, metrics={'other': 3.0})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT)
    assert _dumped(run, 1, "val") == _dumped(run, 1, "val", as_of=run.versions()[-1]["version"])
    assert checks["latest_stamp"] == 1
    assert latest_logs.latest(run.table_location("logs")).committed.num_rows == 5  # its log (metrics only) too


def test_a_step_read_never_waits_for_this_process_queued_logs(tmp_path, make_trajectory, monkeypatch):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="group")
    group = art.TrajectoryGroup([make_trajectory(0.5, j) for j in range(3)])
    model.log_sync([group], split="train", step=1)
    model.flush()
    run = model.run
    first = _dumped(run, 1)
    gate, entered = threading.Event(), threading.Event()
    real = batch_commit.commit

    def held(*args, **kwargs):  # the committer waits here until the reads below are done
        entered.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_commit, "commit", held)
    waits = count_calls(monkeypatch, (group_commit, "_wait"))
    other = art.TrajectoryGroup([make_trajectory(0.25, j) for j in range(2)])
    try:
        model.log_sync([group], split="train", step=2)
        assert entered.wait(30)  # the first is being committed; the next two stay queued
        model.log_sync([other], split="train", step=2)
        model.log_sync([other], split="val", step=2)
        assert [r.step for r in group_commit.queued(run.table_location("logs"))] == [2, 2, 2]
        assert _dumped(run, 1) == first  # another step: read as committed
        queued = _dumped(run, 2)  # its own step: the queued rows as they are, in the order logged
        assert [len(g["trajectories"]) for g in queued] == [3, 2]
        assert len(_dumped(run, 2, split="val")) == 1
        assert [r.step for r in group_commit.queued(run.table_location("logs"))] == [2, 2, 2]  # none committed
        assert waits["_wait"] == 0
    finally:
        gate.set()
    model.flush()
    assert _dumped(run, 2) == queued  # the same groups once committed
    assert _dumped(art.open_store(str(tmp_path)).run("p", "m"), 2) == queued  # and read afresh
