"""On a bucket, the upkeep of a run's journal after its group commits costs few requests:
- its compaction takes the rows of the one-row fragments this process's commits wrote from
  memory (`artstore.storage.written_rows`), not with a GET per data file (~1.2 per small log);
- its compaction check plans on this process's handle (`compaction.maintain(held=True)`), not
  after two probes (a LIST of `_versions/` each) for a newer version per check;
- a fold's look-up of the unfolded logs and its take of their payloads (`keys.firsts_after`,
  `fragment_rows.rows_at`), and a stats refresh's read of the committed logs (`keys.first_per_key`),
  take those rows from memory too;
- a journal cleanup probes for no version newer than the handle's (`compaction.maintain(held=True)`);
- a stats refresh reads the run's tables' sizes through this process's handles (no manifest GET).
Counted at the fault proxy in front of moto, in the upkeep each log asked for."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

import pytest

import artstore as art
from artstore.log import upkeep
from artstore.storage import fragments, written_rows

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("stats_refresh_held")]  # counts no stats refresh

LOGS = 40  # two journal compactions (16 fragments each), no fold (every 64)


def _upkeep_requests(faulty_s3, make_trajectory, name: str) -> list[tuple[str, str]]:
    """(method, unquoted path with query) of each request made by the upkeep of LOGS small logs,
    each group-committed and followed by the upkeep it asked for."""
    model = art.Model(name=name, project="p", base_path=faulty_s3.uri, storage_options=faulty_s3.storage_options,
                      report_metrics=[], reader_window=timedelta(seconds=2), commit="group")
    faulty_s3.proxy.seen = seen = []
    made = []
    for i in range(LOGS):
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i)
        model.flush()
        start = len(seen)
        upkeep.wait(model.run.location, 120, stats=False)  # the compaction this log asked for
        made += seen[start:]
    assert fragments.fragment_count(model.run.location.child("logs.lance")) < LOGS // 2  # it compacted
    assert len(model.run.history()) == LOGS  # every log still read
    return [(m, urllib.parse.unquote(p)) for m, p in made]


def _journal_data_gets(made: list[tuple[str, str]]) -> int:
    return sum(m == "GET" and "/logs.lance/data/" in urllib.parse.urlsplit(p).path for m, p in made)


def _journal_version_lists(made: list[tuple[str, str]]) -> int:
    return sum(m == "GET" and "list-type" in p and "logs.lance/_versions" in p for m, p in made)


def _logged_group_model(faulty_s3, name: str, make_trajectory, logs: int) -> art.Model:
    """A group-commit model on the faulty bucket with `logs` val logs, each committed and its upkeep done."""
    model = art.Model(name=name, project="p", base_path=faulty_s3.uri, storage_options=faulty_s3.storage_options,
                      report_metrics=[], reader_window=timedelta(seconds=2), commit="group")
    for i in range(logs):
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i)
        model.flush()
        upkeep.wait(model.run.location, 120, stats=False)
    return model


def test_a_journal_compaction_reads_back_none_of_the_rows_its_process_wrote(faulty_s3, make_trajectory, monkeypatch):
    gets = _journal_data_gets(_upkeep_requests(faulty_s3, make_trajectory, "kept"))
    with monkeypatch.context() as m:
        m.setattr(written_rows, "KEPT_BYTES", 0)  # nothing kept: the compactions read every fragment
        gets_reading = _journal_data_gets(_upkeep_requests(faulty_s3, make_trajectory, "read"))
    assert gets_reading >= LOGS // 2, gets_reading  # what it costs without: ~1 GET per log
    assert gets <= 2, (gets, gets_reading)


def test_a_journal_compaction_check_lists_no_versions_after_its_own_commit(faulty_s3, make_trajectory):
    made = _upkeep_requests(faulty_s3, make_trajectory, "held")
    # A check every 4 logs made two probes of `_versions/` (maintain's open, then the planning
    # try's: 16 here); left: Lance's listing at each compaction's commit and
    # each cleanup's (6 here)
    assert _journal_version_lists(made) <= LOGS // 4, made


def test_a_journal_cleanup_on_a_bucket_probes_for_no_newer_version(faulty_s3, make_trajectory):
    made = _upkeep_requests(faulty_s3, make_trajectory, "cleaned")
    # A cleanup keeps every version from the handle's on (and maps those before it): a probe for a
    # newer one (a LIST of one key, one per cleanup) adds nothing to its own listing of `_versions/`
    probes = [p for m, p in made if m == "GET" and "list-type" in p and "logs.lance/_versions" in p and "max-keys=1&" in p]
    cleanups = [p for m, p in made if m == "GET" and "list-type" in p and "logs.lance/_transactions" in p]
    assert cleanups and not probes, (len(cleanups), probes)


def test_a_fold_reads_none_of_the_journal_rows_its_process_wrote(faulty_s3, make_trajectory, monkeypatch):
    from artstore.log import fold

    def fold_gets(name: str) -> int:
        model = _logged_group_model(faulty_s3, name, make_trajectory, 24)  # past one journal compaction, short of a fold
        faulty_s3.proxy.seen = seen = []
        assert max(fold.fold(model.run.location).values()) == 24  # every log folded here
        assert len(model.run.groups(split="val")) == 24
        return _journal_data_gets([(m, urllib.parse.unquote(p)) for m, p in seen])

    gets = fold_gets("kept")
    with monkeypatch.context() as m:
        m.setattr(written_rows, "KEPT_BYTES", 0)
        gets_reading = fold_gets("read")
    # without: the look-up of unfolded logs and the take of their payloads read each fragment
    assert gets_reading >= 4 and gets == 0, (gets, gets_reading)


def test_a_stats_refresh_reads_none_of_the_journal_rows_its_process_wrote(faulty_s3, make_trajectory, monkeypatch):
    from artstore.log import run_stats

    def stats_gets(name: str) -> int:
        model = _logged_group_model(faulty_s3, name, make_trajectory, 20)  # a compaction's output and a few one-row fragments
        faulty_s3.proxy.seen = seen = []
        assert run_stats.compute(model.run.location)["logs"] == 20
        return _journal_data_gets([(m, urllib.parse.unquote(p)) for m, p in seen])

    gets = stats_gets("kept")
    with monkeypatch.context() as m:
        m.setattr(written_rows, "KEPT_BYTES", 0)
        gets_reading = stats_gets("read")
    # without: the committed logs' small columns read from every fragment of the journal
    assert gets_reading >= 4 and gets == 0, (gets, gets_reading)


def test_a_stats_refresh_reads_no_manifest_of_a_table_its_process_holds(faulty_s3, make_trajectory):
    """The run's size in its stats reads each table's manifest through this process's handle: a probe
    (a LIST of one key), no GET of a manifest it holds already (an open lists and reads it)."""
    from artstore.log import fold, run_stats

    model = _logged_group_model(faulty_s3, "sized", make_trajectory, 8)
    assert max(fold.fold(model.run.location).values()) == 8  # the data tables exist, held as the fold left them
    faulty_s3.proxy.seen = seen = []
    stats = run_stats.compute(model.run.location)
    assert stats["logs"] == 8 and stats["size_bytes"] > 0
    manifests = [p for m, p in seen if m == "GET" and urllib.parse.unquote(p).endswith(".manifest")]
    assert manifests == [], manifests
