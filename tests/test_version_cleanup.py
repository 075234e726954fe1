"""Reads and writes beside the cleanup of old versions: with a retention window of zero, cleanup
removes every version but the latest (and tagged ones) as soon as it runs. Nothing that already
committed, or that a cache remembers, may then fail on a version it expected to reopen, and a tag
never points at a removed version. Cleanup is made to run inline here (before log() returns), the
worst timing for the background thread."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import artstore as art
from artstore.errors import VersionNotFoundError
from artstore.log import upkeep
from artstore.log.commit import write_log
from artstore.storage import compaction, datasets

NO_WINDOW = timedelta(0)


@pytest.fixture
def inline_cleanup(monkeypatch):
    """Every cleanup (and background compaction) log() asks for runs at once, on the caller's thread."""
    def now(loc, table, retention, compact=False):
        compaction._last_cleanup.pop(loc.uri, None)
        compaction.maintain(loc, table, retention, compact=compact)

    monkeypatch.setattr(upkeep, "request", now)


def test_log_with_retention_zero_never_raises_after_it_committed(tmp_path, inline_cleanup, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], retention=NO_WINDOW)
    for i in range(40):
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i, log_id=f"l{i}")
        if i % 7 == 0:
            assert model.run.best_step() == i  # a cached summary, extended by each log
    assert model.run.logs()["log_id"].to_pylist() == [f"l{i}" for i in range(40)]
    assert len(datasets.versions(model.run.table_location("logs"))) < 40  # cleanup did run


def test_best_step_rebuilds_when_its_cached_summary_version_was_cleaned_up(tmp_path, inline_cleanup, monkeypatch):
    monkeypatch.setenv("ARTSTORE_COMMIT", "sync")  # sync: the versions named below are one per log
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], retention=NO_WINDOW)
    model.log_sync(None, split="val", step=0, metrics={"reward": 0.5})
    run = model.run
    assert run.best_step() == 0  # a summary cached at this version
    cached = datasets.latest_version(run.table_location("logs"))
    for step in range(1, 30):  # another writer: the cache is not told; compaction and cleanup run
        write_log(run.location, [], split="val", step=step, metrics={"reward": step / 10},
                  retention=NO_WINDOW)
    with pytest.raises(VersionNotFoundError):
        datasets.open_dataset(run.table_location("logs"), version=cached)  # the cached version is gone
    assert run.best_step() == 29
    assert run.step_summary().means("val/reward")[29] == pytest.approx(2.9)


@pytest.mark.parametrize("pin", [False, True])  # a logical tag keeps its point; a pinned one its version
def test_a_tag_set_while_cleanup_runs_keeps_its_version_or_raises(tmp_path, make_trajectory, pin):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    run = model.run
    loc = run.table_location("logs")
    for trial in range(6):
        for i in range(6):
            model.log_sync(art.TrajectoryGroup([make_trajectory(0.1, i)]), step=trial, log_id=f"t{trial}-{i}")
        # not the latest: cleanup may remove it (group commits may have made fewer than 3 versions yet)
        target = max(1, datasets.latest_version(loc) - 2)
        cleaner = threading.Thread(target=compaction.maintain, args=(loc, "logs", NO_WINDOW),
                                   kwargs={"compact": False, "force": False})
        compaction._last_cleanup.pop(loc.uri, None)
        cleaner.start()
        try:
            run.tag(f"trial{trial}", target, pin=pin)
        except VersionNotFoundError:
            assert pin  # a logical tag is answered after cleanup: never refused
            cleaner.join()
            assert f"trial{trial}" not in run.tags()  # refused: no dangling tag
            continue
        cleaner.join()
        assert run.tags()[f"trial{trial}"] == target and run.tags()[f"trial{trial}"].pinned == pin
        if pin:
            assert datasets.open_dataset(loc, version=target) is not None  # kept
        assert 0 < run.logs(as_of=f"trial{trial}").num_rows <= 6 * (trial + 1)  # still readable
