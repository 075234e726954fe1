"""On a bucket, a journal's compaction takes the rows of the one-row fragments this process's
group commits wrote from memory (`artstore.storage.written_rows`), not with a GET per data file
(about 1.2 GETs per small log before). Counted at the fault proxy in front of moto."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

import pytest

import artstore as art
from artstore.log import upkeep
from artstore.storage import fragments, written_rows

pytestmark = pytest.mark.s3

LOGS = 40  # two and a half journal compactions (16 fragments each), no fold (every 64)


def _journal_data_gets(seen: list[tuple[str, str]]) -> int:
    return sum(m == "GET" and "/logs.lance/data/" in urllib.parse.unquote(urllib.parse.urlsplit(p).path)
               for m, p in seen)


def _log_and_count(faulty_s3, make_trajectory, name: str) -> int:
    model = art.Model(name=name, project="p", base_path=faulty_s3.uri, storage_options=faulty_s3.storage_options,
                      report_metrics=[], reader_window=timedelta(seconds=2), commit="group")
    faulty_s3.proxy.seen = seen = []
    for i in range(LOGS):
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i)
        model.flush()
        upkeep.wait(model.run.location, 120, stats=False)  # the compaction this log asked for
    assert fragments.fragment_count(model.run.location.child("logs.lance")) < LOGS // 2  # it compacted
    assert len(model.run.history()) == LOGS  # every log still read
    return _journal_data_gets(seen)


def test_a_journal_compaction_reads_back_none_of_the_rows_its_process_wrote(faulty_s3, make_trajectory, monkeypatch):
    gets = _log_and_count(faulty_s3, make_trajectory, "kept")
    with monkeypatch.context() as m:
        m.setattr(written_rows, "KEPT_BYTES", 0)  # nothing kept: the compactions read every fragment
        gets_reading = _log_and_count(faulty_s3, make_trajectory, "read")
    assert gets_reading >= LOGS // 2, gets_reading  # what it costs without: ~1 GET per log
    assert gets <= 4, (gets, gets_reading)
