"""Invariant 1, retries: a log is stored once however often it is retried, by id or by content,
after a crash between its data and its commit, or by racing threads."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

import artstore as art
from artstore.log import commit as writer
from artstore.log import journal
from artstore.schema import arrow_schema
from artstore.storage import compaction, datasets, files, fragments, keys, scans, writes
from tests.conftest import tool_call_trajectory


def _model(base_path, **kw):
    return art.Model(name="m", project="p", base_path=base_path, report_metrics=[], **kw)


def _groups(make_trajectory, offset=0.0):
    return [art.TrajectoryGroup([make_trajectory(0.1 * i + offset, i) for i in range(3)], metrics={"judge": 0.5}),
            art.TrajectoryGroup([make_trajectory(0.7 + offset, 9)])]


def _raw_rows(run: art.Run, table: str) -> int:
    """Rows physically in the table, visible or not."""
    found = scans.scan(run.table_location(table), columns=["write_id"])
    return 0 if found is None else found.num_rows


def test_same_log_id_is_stored_once_and_the_retry_returns_the_stored_record(base_path, make_trajectory):
    model = _model(base_path)
    first = model.log_sync(_groups(make_trajectory), split="val", log_id="rollout-17")
    history = model.history()
    raw = {t: _raw_rows(model.run, t) for t in writer.DATA_TABLES}
    again = model.log_sync(_groups(make_trajectory, offset=0.05), split="val", log_id="rollout-17")
    assert first.created and not again.created
    assert (again.log_id, again.step, again.num_trajectories, again.metrics) == \
        (first.log_id, first.step, first.num_trajectories, first.metrics)
    assert again.recorded_at == first.recorded_at
    assert model.history().equals(history)
    assert {t: _raw_rows(model.run, t) for t in writer.DATA_TABLES} == raw  # not even invisible rows
    assert model.run.groups() == _groups(make_trajectory)


def test_a_sync_retry_leaves_no_data_files_behind(base_path, make_trajectory):
    """The sync writer writes a log's data files while it looks the id up; a retry deletes them."""
    model = _model(base_path, commit="sync")
    model.log_sync(_groups(make_trajectory), split="val", log_id="rollout-17")
    # A log is one journal row (artstore.log.journal): its only data file is in logs.lance.
    data = {t: model.run.location.child(f"{t}.lance", "data") for t in ("logs",)}
    before = {t: files.list_dir(loc) for t, loc in data.items()}
    again = model.log_sync(_groups(make_trajectory, offset=0.05), split="val", log_id="rollout-17")
    derived = model.log_sync(_groups(make_trajectory), split="val", step=2)
    before_derived = {t: files.list_dir(loc) for t, loc in data.items()}
    assert not model.log_sync(_groups(make_trajectory), split="val", step=2).created
    assert not again.created and derived.created
    assert {t: files.list_dir(loc) for t, loc in data.items()} == before_derived
    assert all(set(before[t]) < set(before_derived[t]) for t in data)  # the derived log did write


async def test_same_content_logged_twice_is_stored_once_under_a_derived_id(base_path, make_trajectory):
    model = _model(base_path)
    first = await model.log(_groups(make_trajectory), split="train", step=3)
    again = await model.log(_groups(make_trajectory), split="train", step=3)
    assert first.log_id.startswith("d-") and again.log_id == first.log_id
    assert first.created and not again.created
    assert model.history().num_rows == 1
    assert model.run.trajectories().num_rows == 4
    other_step = await model.log(_groups(make_trajectory), split="train", step=4)
    other_content = await model.log(_groups(make_trajectory, offset=0.01), split="train", step=3)
    assert other_step.created and other_content.created
    assert len({first.log_id, other_step.log_id, other_content.log_id}) == 3
    assert model.history().num_rows == 3


class _Died(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def test_sync_attempt_that_died_before_its_commit_is_invisible_and_its_retry_shows_once(
        base_path, make_trajectory, monkeypatch):
    model = _model(base_path, commit="sync")  # the death is injected into write_log's own commit
    model.log_sync(_groups(make_trajectory), split="val", step=0, log_id="before")

    def die(*args, **kwargs):
        raise _Died()

    data = model.run.location.child("logs.lance", "data")
    written = len(files.list_dir(data))
    monkeypatch.setattr(writes, "commit_files", die)
    with pytest.raises(_Died):
        model.log_sync(_groups(make_trajectory, 0.2), split="val", step=1, log_id="crashy")
    monkeypatch.undo()
    run = model.run
    assert run.logs()["log_id"].to_pylist() == ["before"]
    assert len(files.list_dir(data)) == written + 1  # the dead attempt's journal row file is there ...
    assert _raw_rows(run, "logs") == 1  # ... and no version names it
    assert run.trajectories().num_rows == 4
    assert run.history().num_rows == 1 and set(run.metrics()["log_id"].to_pylist()) == {"before"}

    retry = model.log_sync(_groups(make_trajectory, 0.2), split="val", step=1, log_id="crashy")
    assert retry.created
    assert run.logs()["log_id"].to_pylist() == ["before", "crashy"]
    assert run.trajectories(step=1).num_rows == 4
    assert len(set(run.trajectories()["trajectory_id"].to_pylist())) == 8
    assert run.groups(step=1) == _groups(make_trajectory, 0.2)
    assert run.history().num_rows == 2
    per_log = run.metrics()["log_id"].to_pylist()
    assert per_log.count("crashy") == per_log.count("before") == len(retry.metrics)


def test_threads_racing_to_log_the_same_id_commit_it_once(base_path, make_trajectory):
    model = _model(base_path)
    model.log_sync(_groups(make_trajectory), split="val", step=0, log_id="warm-up")  # tables exist
    records, errors = [], []

    def attempt():
        try:
            records.append(_model(base_path).log_sync(_groups(make_trajectory, 0.3), split="val", step=1,
                                                      log_id="raced"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.created for r in records) == [False, False, False, True]
    assert model.run.logs()["log_id"].to_pylist() == ["warm-up", "raced"]
    assert model.run.trajectories(step=1).num_rows == 4
    assert model.run.groups(step=1) == _groups(make_trajectory, 0.3)
    assert model.history().num_rows == 2


def _ids_in_storage_order(run: art.Run) -> list[str]:
    return scans.scan(run.table_location("logs"), columns=["write_id"])["write_id"].to_pylist()


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_an_attempt_that_raced_past_the_look_up_loses_to_the_first_commit_for_every_reader(
        base_path, make_trajectory, monkeypatch, commit):
    """Two attempts at one log_id that both miss the look-up both append a logs row: the first
    committed wins for Run.logs, the data tables and SQL, even after compaction put the loser's
    row first in storage; the loser's caller gets the winner's record (sync; group: it was told
    created, README)."""
    model = _model(base_path, commit=commit)
    model.log_sync(_groups(make_trajectory, 0.1), split="val", step=0, log_id="before")
    first = model.log_sync(_groups(make_trajectory), split="val", step=1, log_id="raced")
    model.flush()  # group: committed (not still queued, where the queue itself finds it)
    real = writer._winner

    def missed(run, log_id, version=None):  # the look-up ran before the first attempt committed
        return (None, 0, True, True) if version is None else real(run, log_id, version)

    monkeypatch.setattr(writer, "_winner", missed)
    late = model.log_sync(_groups(make_trajectory, 0.2), split="val", step=1, log_id="raced")
    monkeypatch.undo()
    run = model.run
    if commit == "group":  # queued before any re-check: its caller was told created
        assert first.created and late.created
        assert run.logs()["log_id"].to_pylist() == ["before", "raced"]  # the bug named above fails here
    else:
        assert first.created and not late.created
        assert (late.recorded_at, late.metrics, late.num_trajectories) == \
            (first.recorded_at, first.metrics, first.num_trajectories)
    assert _raw_rows(run, "logs") == 3  # the loser's journal row is there

    def visible():
        assert run.logs()["log_id"].to_pylist() == ["before", "raced"]
        assert run.groups(step=1) == _groups(make_trajectory)
        assert run.trajectories().num_rows == 8
        assert run.history().num_rows == 2
        assert run.metrics()["log_id"].to_pylist().count("raced") == len(first.metrics)
        store = art.open_store(base_path)
        assert store.sql("SELECT log_id FROM logs ORDER BY log_id")["log_id"].to_pylist() == ["before", "raced"]
        assert store.sql("SELECT count(*) AS n FROM trajectories")["n"].to_pylist() == [8]
        assert store.sql("SELECT count(*) AS n FROM history")["n"].to_pylist() == [2]

    visible()
    # compaction of the first two logs rows puts them after the loser's: storage order is not commit order
    loc = run.table_location("logs")
    ds = datasets.open_dataset(loc)
    compaction._rewrite_sequenced(loc, ds, [ds.get_fragments()[:2]])
    storage = _ids_in_storage_order(run)
    assert len(storage) == 3 and storage[0] not in run.logs()["write_id"].to_pylist()  # the loser is first now
    visible()
    run.compact()  # the fold, then every table, the logs rows into one fragment
    assert fragments.fragment_count(loc) == 1
    assert _raw_rows(run, "trajectories") == 8  # the fold copied the winners' rows only
    visible()
    assert model.log_sync(_groups(make_trajectory, 0.2), split="val", step=1, log_id="raced").created is False


def test_a_logs_table_made_before_first_commit_wins_keeps_its_unique_insert(base_path, make_trajectory, monkeypatch):
    """A run whose logs table was written by an artstore before commit_seq (storage order is not
    commit order there) goes on inserting its logs rows with Lance's unique merge_insert."""
    model = _model(base_path)
    old_schema = pa.schema([f for f in arrow_schema("logs")
                            if f.name not in (*journal.PAYLOAD_COLUMNS, keys.SEQ)])
    writes.create(model.run.table_location("logs"), old_schema.empty_table())  # as that artstore made it
    model.log_sync(_groups(make_trajectory), split="val", step=0, log_id="old")
    assert keys.SEQ not in datasets.open_dataset(model.run.table_location("logs")).schema.names
    real_winner = writer._winner
    monkeypatch.setattr(writer, "_winner", lambda run, log_id, version=None:
                        (None, 0, False, False) if version is None else real_winner(run, log_id, version))
    again = model.log_sync(_groups(make_trajectory, 0.2), split="val", step=0, log_id="old")
    assert not again.created and _raw_rows(model.run, "logs") == 1
    monkeypatch.undo()
    assert model.log_sync(_groups(make_trajectory, 0.2), split="val", step=1, log_id="new").created
    assert model.run.logs()["log_id"].to_pylist() == ["old", "new"]
    assert model.run.logs().schema.equals(arrow_schema("logs").remove_metadata().empty_table().select(
        journal.log_columns()).schema, check_metadata=False)
    assert model.run.groups(step=0) == _groups(make_trajectory)


def test_a_derived_log_id_is_the_one_earlier_versions_derived(base_path):
    """A log retried after an upgrade of artstore is stored once: the id derived from its content
    is the one artstore derived before (pinned from main at 3b0b9c5). A change of the encoding
    that changes these ids must say so (it breaks retries across versions)."""
    run = art.open_store(base_path).location.child("p", "models", "m")
    groups = [art.TrajectoryGroup([tool_call_trajectory(0.25 * j, j, turns=2, correct=j % 2 == 0) for j in range(4)]),
              art.TrajectoryGroup([art.Trajectory(
                  messages_and_choices=[{"role": "user", "content": "hi"}], reward=1.0,
                  additional_histories=[art.History(messages_and_choices=[{"role": "user", "content": "x"}])])])]
    assert writer.write_log(run, groups, split="train", step=3, metrics={"judge": 0.5}).log_id == \
        "d-7ff2d9b13bdb6c6c19a69e63fcecb0d5"
    assert writer.write_log(run, groups[:1], split="val", step=3).log_id == "d-bd0fb95fb8358fb90365b9329f679e76"
