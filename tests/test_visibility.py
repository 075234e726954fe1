"""Visibility: the write_id filter is skipped exactly when row counts prove every row visible.

Each test reads a real run on disk through Run.read_table and Store.sql, and checks what Lance
was asked to read (whether `write_id` was among the columns), not timings.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import lance
import pyarrow as pa
import pytest

import artstore as art
from artstore.log import fold, idle_fold, upkeep
from artstore.log.commit import write_log
from artstore.storage import writes

BACKGROUND_THREADS = ("artstore-upkeep", "artstore-idle-fold", "artstore-group-commit")


@pytest.fixture
def read_columns(monkeypatch):
    """Every column list Lance was asked for by a to_table or scanner call on a gated table, but
    for the process's background work (upkeep, idle folds, group commits)."""
    seen: list[tuple[str, list[str] | None]] = []
    for method in ("to_table", "scanner"):
        original = getattr(lance.LanceDataset, method)

        def spy(self, *args, _original=original, **kwargs):
            name = self.uri.rstrip("/").rsplit("/", 1)[-1]
            # Not the background threads': a stats refresh (5 s after a log, this test's or an
            # earlier one's in this process) copies small runs' rows into the pool (a to_table
            # with write_id), and under load it fell inside a test's reads.
            mine = not threading.current_thread().name.startswith(BACKGROUND_THREADS)
            if mine and name in ("trajectories.lance", "groups.lance", "metrics.lance"):
                cols = kwargs.get("columns", args[0] if args else None)
                seen.append((name, None if cols is None else list(cols)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(lance.LanceDataset, method, spy)
    return seen


def _read_write_id(seen) -> bool:
    return any(cols is None or "write_id" in cols for _, cols in seen)


def _log(model: art.Model, step: int, rewards: list[float], **kw) -> None:
    trajs = [art.Trajectory(messages_and_choices=[{"role": "user", "content": f"q{step}.{i}"}], reward=r)
             for i, r in enumerate(rewards)]
    model.log_sync([art.TrajectoryGroup(trajs)], split="val", step=step, **kw)


@pytest.fixture
def run(tmp_path):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step in range(4):
        _log(model, step, [step + 0.25, step + 0.75])
        model.flush()  # one version of logs per log (group mode may batch logs): as_of names each
    fold.fold(model.run.location)  # the data tables hold the rows (journaled logs are read alike)
    idle_fold.drop_waiting()  # no background fold or stats refresh reads the tables during a test
    upkeep.wait(model.run.location, timeout=60)
    return art.open_store(tmp_path).run("p", "m")


SQL = "SELECT step, avg(reward) AS r, count(*) AS n FROM trajectories GROUP BY step ORDER BY step"


def test_without_orphans_no_write_id_is_read(run, read_columns):
    got = run.read_table("trajectories", columns=["step", "reward"])
    assert got["reward"].to_pylist() == [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75]
    assert run.store.sql(SQL).to_pylist() == [{"step": s, "r": s + 0.5, "n": 2} for s in range(4)]
    assert read_columns and not _read_write_id(read_columns)


def test_orphan_rows_are_filtered_by_write_id(run, read_columns):
    orphan = run.read_table("trajectories").slice(0, 2).set_column(1, "write_id", pa.array(["crashed"] * 2))
    writes.append(run.table_location("trajectories"), orphan)  # a writer died before its logs row
    read_columns.clear()
    assert run.read_table("trajectories", columns=["step"])["step"].to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["n"] for r in run.store.sql(SQL).to_pylist()] == [2, 2, 2, 2]
    assert _read_write_id(read_columns)
    assert {name for name, _ in read_columns} == {"trajectories.lance"}


def test_as_of_an_older_version_filters_the_newer_rows(run, read_columns):
    v2 = run.versions()[1]["version"]
    assert run.read_table("trajectories", columns=["step"], as_of=v2)["step"].to_pylist() == [0, 0, 1, 1]
    assert [r["step"] for r in run.store.sql(SQL, as_of=v2).to_pylist()] == [0, 1]
    assert _read_write_id(read_columns)


def test_order_is_the_logs_order_after_compaction(run, read_columns):
    run.compact()
    model = art.Model(name="m", project="p", base_path=run.store.uri, report_metrics=[])
    _log(model, 9, [9.0])
    run.compact()
    read_columns.clear()
    assert run.read_table("trajectories", columns=["step"])["step"].to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3, 9]
    assert not _read_write_id(read_columns)
    steps = [r["step"] for r in run.store.sql("SELECT step FROM trajectories").to_pylist()]
    assert sorted(steps) == [0, 0, 1, 1, 2, 2, 3, 3, 9]


def test_calls_sharing_a_recorded_at_are_ordered_by_log_id(tmp_path, read_columns):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    loc = art.open_store(tmp_path).run("p", "m").location
    for step in (1, 0):
        group = art.TrajectoryGroup([art.Trajectory(messages_and_choices=[{"role": "user", "content": "x"}],
                                                    reward=float(step))])
        write_log(loc, [group], split="val", step=step, log_id=f"id{step}", recorded_at=at)
    fold.fold(loc)
    run = art.open_store(tmp_path).run("p", "m")
    assert run.read_table("trajectories", columns=["step"])["step"].to_pylist() == [0, 1]
    assert _read_write_id(read_columns)  # recorded_at cannot order them: the write_id path did


def test_a_table_pinned_at_a_given_version_is_always_filtered(tmp_path, read_columns):
    """Counts prove nothing for a table not opened after the logs pin: here trajectories at a version
    with two orphan rows and without the last call's rows has as many rows as the logs wrote."""
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step in range(3):
        _log(model, step, [0.5, 0.5])
    fold.fold(model.run.location)
    run = art.open_store(tmp_path).run("p", "m")
    orphan = run.read_table("trajectories").slice(0, 2).set_column(1, "write_id", pa.array(["crashed"] * 2))
    with_orphans = writes.append(run.table_location("trajectories"), orphan)
    _log(model, 3, [0.5, 0.5])
    logs = run.versions()[-1]["version"]
    as_of = {"p/m": {"logs": logs, "trajectories": with_orphans}}
    # Step 3 is not in that version of trajectories, but the pinned logs name it: its rows come
    # from its journal row (journaled logs are read alike; see artstore.log.journal).
    assert [r["step"] for r in run.store.sql(SQL, as_of=as_of).to_pylist()] == [0, 1, 2, 3]
    assert [r["n"] for r in run.store.sql(SQL, as_of=as_of).to_pylist()] == [2, 2, 2, 2]
    assert _read_write_id(read_columns)
