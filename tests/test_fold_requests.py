"""On a bucket, the fold's upkeep opens the run's data tables on this process's handles (as its own
commits left them: `datasets.open_held`), not with a LIST of each table's `_versions/`:
- the fold's open of the three tables (another process's fold since fails its claim instead),
- the journal compactions' and the payload drop's reads of FOLDED (an older FOLDED drops fewer
  payloads, never one not folded),
- the data tables' compaction check after a fold;
and the payload drop and a fold racing a journal compaction read back none of the journal rows
this process wrote (`artstore.storage.written_rows`).
Counted at the fault proxy in front of moto."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

import pytest

import artstore as art
from artstore.log import fold, upkeep
from artstore.storage import compaction, datasets, fragment_rows, keys, written_rows
from artstore.storage.data_files import first_file

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("stats_refresh_held")]  # counts no stats refresh

TABLES = ("trajectories", "groups", "metrics")


def _model(faulty_s3, name: str) -> art.Model:
    return art.Model(name=name, project="p", base_path=faulty_s3.uri, storage_options=faulty_s3.storage_options,
                     report_metrics=[], reader_window=timedelta(seconds=2), commit="group")


def _log(model: art.Model, make_trajectory, steps: range) -> None:
    """One small val log per step, each committed and followed by the upkeep it asked for."""
    for i in steps:
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i)
        model.flush()
        upkeep.wait(model.run.location, 120, stats=False)


def _table_version_lists_past_commits(seen: list[tuple[str, str]]) -> int:
    """LISTs of the data tables' `_versions/` beyond one per commit of theirs (Lance lists the
    folder at each commit: a manifest PUT each)."""
    def on_tables(p: str) -> bool:
        return any(f"{t}.lance/_versions" in urllib.parse.unquote(p) for t in TABLES)
    lists = sum(m == "GET" and "list-type" in p and on_tables(p) for m, p in seen)
    return lists - sum(m == "PUT" and on_tables(p) and p.endswith(".manifest") for m, p in seen)


def _journal_data_gets(seen: list[tuple[str, str]]) -> int:
    return sum(m == "GET" and "/logs.lance/data/" in urllib.parse.urlsplit(urllib.parse.unquote(p)).path for m, p in seen)


def test_a_folds_upkeep_opens_the_data_tables_on_its_own_handles(faulty_s3, make_trajectory, monkeypatch):
    def lists(name: str) -> int:
        model = _model(faulty_s3, name)
        _log(model, make_trajectory, range(20))
        assert max(fold.fold(model.run.location).values()) == 20  # creates the tables
        first = fold.stats(model.run.location)
        faulty_s3.proxy.seen = seen = []
        _log(model, make_trajectory, range(20, 60))  # journal compactions: each reads FOLDED
        upkeep.request_fold(model.run.location, timedelta(seconds=2))  # the fold, its payload drop, compaction checks
        upkeep.wait(model.run.location, 120, stats=False)
        lists = _table_version_lists_past_commits(seen)
        folded = fold.stats(model.run.location)
        assert len(set(folded.values())) == 1 and folded["groups"] > first["groups"], (first, folded)
        assert len(model.run.groups(split="val")) == 60
        return lists

    held = lists("held")
    with monkeypatch.context() as m:
        m.setattr(datasets, "open_held", datasets.open_latest)  # a probe (a LIST) at each open
        m.setattr(compaction, "_open", lambda loc, held: datasets.open_latest(loc))
        probing = lists("probing")
    # left: Lance's own listing at each commit (a fold's 7: claim, 3 appends, 3 releases), and a probe
    # after a table's compaction (Lance's compact_files leaves no handle)
    assert held <= 1 and probing >= held + 12, (held, probing)


def test_a_payload_drop_reads_none_of_the_journal_rows_its_process_wrote(faulty_s3, make_trajectory, monkeypatch):
    def drop_gets(name: str) -> int:
        model = _model(faulty_s3, name)
        _log(model, make_trajectory, range(24))  # a journal compaction's output and one-row fragments
        assert max(fold.fold(model.run.location).values()) == 24
        faulty_s3.proxy.seen = seen = []
        assert fold.drop_payloads(model.run.location) > 0
        assert len(model.run.groups(split="val")) == 24
        return _journal_data_gets(seen)

    gets = drop_gets("kept")
    with monkeypatch.context() as m:
        m.setattr(written_rows, "KEPT_BYTES", 0)
        gets_reading = drop_gets("read")
    # without: each fragment's sequences, then its payloads, read back
    assert gets_reading >= 4 and gets == 0, (gets, gets_reading)


def test_a_fold_planned_before_a_journal_compaction_reads_none_of_its_rows(faulty_s3, make_trajectory, monkeypatch):
    """The journal's compaction and a fold fall due at the same log: the fold, on the version before
    the compaction, still takes the rewritten fragments' rows from memory."""
    def fold_gets(name: str) -> int:
        # rows earlier tests of this process left: in a full map the retired rows would go first
        written_rows._ROWS.clear()
        model = _model(faulty_s3, name)
        with monkeypatch.context() as m:
            m.setattr(compaction, "JOURNAL_COMPACT_AFTER_FRAGMENTS", 1000)  # no compaction while logging
            _log(model, make_trajectory, range(12))
        logs = model.run.location.child("logs.lance")
        before = datasets.open_latest(logs)
        assert len(before.get_fragments()) == 12
        compaction.rewrite_fragments(logs, before, before.get_fragments(), lambda rows: rows)  # into one fragment
        assert len(datasets.open_latest(logs).get_fragments()) == 1
        faulty_s3.proxy.seen = seen = []
        todo, _ = keys.firsts_after(logs, before, "log_id", -1, ["log_id"])
        assert todo.num_rows == 12
        assert fragment_rows.rows_at(logs, before, todo["_rowaddr"], ["trajectories_ipc"]).num_rows == 12
        return _journal_data_gets(seen)

    def forget(loc, fragments) -> None:  # the rows of rewritten files dropped at once
        for f in fragments:
            written_rows._ROWS.pop((loc.uri, first_file(f)))

    gets = fold_gets("retired")
    with monkeypatch.context() as m:
        m.setattr(written_rows, "retire", forget)
        gets_reading = fold_gets("forgotten")
    assert gets_reading >= 1 and gets == 0, (gets, gets_reading)
