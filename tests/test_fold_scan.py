"""What a fold reads and commits (`artstore.log.fold`): only the journal rows above FOLDED, so its
cost does not grow with the run; a retried log id whose first copy an earlier fold moved is not
moved again; one claim for the three data tables."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import artstore as art
from artstore.errors import StorageError
from artstore.log import commit as writer
from artstore.log import fold
from artstore.storage import Location, compaction, datasets, fragment_rows, keys, scans, writes
from tests.conftest import tool_call_trajectory


def _model(base: str, **kw) -> art.Model:
    return art.Model(name="m", project="p", base_path=base, report_metrics=[], **kw)


def _log(model: art.Model, step: int, reward: float = 0.1, **kw) -> art.LogRecord:
    groups = [art.TrajectoryGroup([tool_call_trajectory(reward + j / 100, step * 10 + j) for j in range(2)])]
    return model.log_sync(groups, split="train", step=step, metrics={"loss": step / 3}, **kw)


def _raw(run: art.Run, table: str) -> int:
    found = scans.scan(run.table_location(table), columns=["write_id"])
    return 0 if found is None else found.num_rows


def _reads(run: art.Run) -> tuple:
    return (run.trajectories().drop_columns(["recorded_at"]), run.groups(), run.history(), run.metrics(), run.logs())


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_a_retry_whose_first_copy_an_earlier_fold_moved_is_not_folded_again(tmp_path, monkeypatch, commit):
    model = _model(str(tmp_path), commit=commit)
    for step in range(3):
        _log(model, step)
    first = _log(model, 3, log_id="raced")
    run = model.run
    assert fold.fold(run.location) == {"trajectories": 4, "groups": 4, "metrics": 4}
    real = writer._winner

    def missed(run, log_id, version=None):  # the look-up ran before the first attempt committed
        return (None, 0, True, True) if version is None else real(run, log_id, version)

    monkeypatch.setattr(writer, "_winner", missed)
    late = _log(model, 3, reward=0.5, log_id="raced")  # other rows, the same id
    monkeypatch.undo()
    # sync: the commit's own re-check finds the first copy; group: the racing attempt was queued
    # before any re-check, so its caller was told created (README: two processes racing one log_id)
    assert first.created and late.created == (commit == "group")
    last = _log(model, 4)
    before = _reads(run)
    raw = {t: _raw(run, t) for t in ("trajectories", "groups", "metrics")}
    keys._KEYS.clear()  # as a fresh process: the older fragments' ids are read, not remembered
    assert fold.fold(run.location) == {"trajectories": 1, "groups": 1, "metrics": 1}  # step 4's log only
    assert {t: _raw(run, t) - raw[t] for t in raw} == {"trajectories": 2, "groups": 1, "metrics": len(last.metrics)}
    assert _reads(run) == before
    assert run.trajectories(step=3)["reward"].to_pylist() == [0.1, 0.11]  # the first copy's rows
    assert fold.fold(run.location) == {"trajectories": 0, "groups": 0, "metrics": 0}


def test_a_fold_after_many_folds_reads_only_the_journal_rows_above_folded(tmp_path, monkeypatch):
    # The counts below need no background fold between the explicit ones: log() asks for none
    # here. (With the trigger at every 64th journal version, background compactions under load
    # moved a multiple of 64 into the five logs after step 60, and their fold took the rows.)
    monkeypatch.setattr(fold, "FOLD_EVERY", 10_000)
    model = _model(str(tmp_path), commit="sync")
    run = model.run
    logs = run.table_location("logs")
    for step in range(60):
        _log(model, step)
        if step % 6 == 5:
            fold.fold(run.location)

    def five_logs_then_fold(first: int) -> int:
        for step in range(first, first + 5):
            _log(model, step)
        run.wait_for_upkeep()
        before = _reads(run)
        assert fold.fold(run.location) == {"trajectories": 5, "groups": 5, "metrics": 5}
        assert _reads(run) == before
        return fold.rows_read(run.location)

    run.wait_for_upkeep()
    compaction.maintain(logs, "logs", timedelta(days=7), force=True, rewrite=fold.drop_folded_payloads(run.location))
    # this process compacted the 60 folded rows: it knows their fragment holds no row to fold
    assert five_logs_then_fold(60) == 5
    compaction.maintain(logs, "logs", timedelta(days=7), force=True, rewrite=fold.drop_folded_payloads(run.location))
    keys._SEQ_HI.clear()  # as another process: the compacted fragment, numbered above FOLDED, is read once
    assert five_logs_then_fold(65) == 70
    assert five_logs_then_fold(70) == 5  # of the journal's 75 rows
    assert datasets.open_dataset(logs).count_rows() == 75
    assert fold.fold(run.location) == {"trajectories": 0, "groups": 0, "metrics": 0}
    assert fold.rows_read(run.location) == 0


def test_a_fold_commits_one_claim_then_one_append_and_one_release_per_table(tmp_path):
    model = _model(str(tmp_path))
    for step in range(4):
        _log(model, step)
    run = model.run
    fold.fold(run.location)  # creates the tables
    for step in range(4, 8):
        _log(model, step)
    versions = {t: datasets.open_dataset(run.table_location(t)).version for t in ("trajectories", "groups", "metrics")}
    assert fold.fold(run.location) == {"trajectories": 4, "groups": 4, "metrics": 4}
    after = {t: datasets.open_dataset(run.table_location(t)).version for t in versions}
    assert {t: after[t] - versions[t] for t in versions} == {"trajectories": 3, "groups": 2, "metrics": 2}
    assert all(datasets.open_dataset(run.table_location(t)).config().get(fold.CLAIM) == "" for t in ("trajectories",))


def test_a_fold_that_fails_midway_frees_its_claim_and_the_next_fold_finishes_without_doubling(tmp_path, monkeypatch):
    model = _model(str(tmp_path))
    for step in range(4):
        _log(model, step)
    run = model.run
    fold.fold(run.location)
    for step in range(4, 8):
        _log(model, step)
    before = _reads(run)
    real = writes.update_config

    def fail_release(loc, updates, read_version):
        if fold.journal.FOLDED in updates:
            raise StorageError("the bucket stopped answering")
        return real(loc, updates, read_version)

    monkeypatch.setattr(writes, "update_config", fail_release)
    assert fold.fold(run.location) == {"trajectories": 0, "groups": 0, "metrics": 0}  # logged, not raised
    monkeypatch.undo()
    assert datasets.open_dataset(run.table_location("trajectories")).config().get(fold.CLAIM) == ""
    assert _raw(run, "trajectories") == 16  # its appends landed ...
    assert _reads(run) == before  # ... and readers do not see them twice
    assert fold.fold(run.location) == {"trajectories": 0, "groups": 0, "metrics": 0}  # all in already
    folded = fold.stats(run.location)
    last = max(run.logs()["commit_seq"].to_pylist())  # the sequence of step 7's log (a group commit's)
    assert set(folded.values()) == {last}  # FOLDED moved to step 7's log
    assert _raw(run, "trajectories") == 16
    assert _reads(run) == before


def test_rows_at_takes_rows_by_address_in_the_order_given_with_and_without_deleted_rows(tmp_path):
    loc = Location.parse(str(tmp_path / "t.lance"))
    for start in (0, 10, 20):
        writes.append(loc, pa.table({"a": pa.array(range(start, start + 10), pa.int64())}))
    ds = datasets.open_dataset(loc)
    found = ds.scanner(columns=["a"], with_row_address=True).to_table()
    wanted = [25, 3, 17, 0, 29]
    addresses = found["_rowaddr"].take(pa.array(wanted))
    assert fragment_rows.rows_at(loc, ds, addresses, ["a"])["a"].to_pylist() == wanted
    ds.delete("a = 12")  # a deletion file: offsets are no longer positions
    ds = datasets.open_dataset(loc)
    assert fragment_rows.rows_at(loc, ds, addresses, ["a"])["a"].to_pylist() == wanted
