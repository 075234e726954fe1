"""Upkeep (artstore.log.upkeep, inline_upkeep.maintain): log() leaves the compaction of its run's journal,
the fold and the cleanup of old versions to a background thread, which it does not wait for; the
thread does one job at a time, and its failures never reach the caller."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import artstore as art
from artstore.log import fold, inline_upkeep
from artstore.storage import compaction, datasets, fragments

RETENTION = timedelta(0)  # every compaction makes a cleanup due (see _fresh_cleanups)


def _log(model: art.Model, i: int, make_trajectory) -> None:
    model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), step=i, log_id=f"l{i}")


def _logs_until_compaction() -> int:
    """Enough logs for a compaction of the journal and a fold into the data tables."""
    return max(compaction.JOURNAL_COMPACT_AFTER_FRAGMENTS, fold.FOLD_EVERY) + inline_upkeep.MAINTAIN_EVERY


def test_log_returns_before_the_cleanup_it_asked_for_and_wait_for_upkeep_sees_it_done(
        base_path, make_trajectory, monkeypatch):
    # sync: each log is a version of the journal (a group commit holds all the logs that came during
    # the previous one), so the 8 logs reach the journal's upkeep check twice
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=[], retention=RETENTION,
                      commit="sync")
    gate, started, cleanups = threading.Event(), threading.Event(), []
    real = compaction.maintain

    def recording(loc, table, retention, force=False, **kw):
        if threading.current_thread().name.startswith("artstore-upkeep"):  # a job asked of the background thread
            started.set()
            gate.wait(120)  # set by the test: 30 s could run out while slow logs ran, and the job go on
            cleanups.append((table, threading.current_thread().name))
        return real(loc, table, retention, force, **kw)

    monkeypatch.setattr(compaction, "maintain", recording)
    logs = 2 * inline_upkeep.MAINTAIN_EVERY  # the journal's upkeep is asked for twice (not yet crowded)
    for i in range(logs):
        _log(model, i, make_trajectory)
    assert started.wait(60) and not cleanups  # asked for, and log() did not wait for it
    assert not model.run.wait_for_upkeep(timeout=0.05)
    gate.set()
    assert model.run.wait_for_upkeep(timeout=60)
    assert cleanups and all(name.startswith("artstore-upkeep") for _, name in cleanups)
    assert model.run.trajectories().num_rows == logs


def test_cleanup_in_the_background_removes_the_versions_outside_the_window(base_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=[], retention=RETENTION)
    for i in range(_logs_until_compaction()):
        _log(model, i, make_trajectory)
    assert model.run.wait_for_upkeep(timeout=60)
    for t in ("trajectories", "groups", "metrics", "logs"):
        loc = model.run.table_location(t)
        small = compaction.JOURNAL_COMPACT_AFTER_FRAGMENTS if t == "logs" else compaction.COMPACT_AFTER_FRAGMENTS
        assert 0 < fragments.fragment_count(loc) < small, t  # compacted in the background
        assert len(datasets.versions(loc)) < _logs_until_compaction(), t  # and cleaned up
    assert model.run.logs()["log_id"].to_pylist() == [f"l{i}" for i in range(_logs_until_compaction())]


def test_a_cleanup_failure_is_logged_and_the_next_request_still_runs(base_path, make_trajectory, monkeypatch, caplog):
    # sync: each log asks the upkeep thread for its cleanup (a group batch's check may run on the
    # committer instead); the worker outliving a failure is what this holds
    monkeypatch.setenv("ARTSTORE_COMMIT", "sync")
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=[], retention=RETENTION)
    real, calls = compaction.maintain, []

    def flaky(loc, table, retention, force=False, **kw):
        if threading.current_thread().name.startswith("artstore-upkeep"):
            calls.append(table)
            if len(calls) == 1:
                raise RuntimeError("lost a race with another cleanup")
        return real(loc, table, retention, force, **kw)

    monkeypatch.setattr(compaction, "maintain", flaky)
    monkeypatch.setattr(compaction, "CLEANUP_EVERY_FRACTION_OF_RETENTION", 0)
    caplog.set_level(logging.WARNING, logger="artstore.log.upkeep")
    for i in range(2 * _logs_until_compaction()):
        _log(model, i, make_trajectory)
        assert model.run.wait_for_upkeep(timeout=60)
    assert "lost a race" in caplog.text
    assert len(calls) > 1  # the worker outlived the failure
    assert model.run.history().num_rows == 2 * _logs_until_compaction()


def test_a_journal_is_compacted_and_cleaned_up_while_a_slow_job_holds_the_other_lane(
        base_path, make_trajectory, monkeypatch):
    """The cause of a CI flake: with one upkeep thread, a slow job (a stale stats refresh of an
    earlier run on a deleted bucket took ~10 s) held every journal's cleanup, and its manifests
    piled up, one per log. The journal lane waits behind no such job."""
    from artstore.log import run_stats, upkeep

    gate, held = threading.Event(), threading.Event()
    real = upkeep._refresh_stats

    def slow(run, retention):
        held.set()
        gate.wait(60)
        return real(run, retention)

    monkeypatch.setattr(upkeep, "_refresh_stats", slow)
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 0.0)
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=[], retention=RETENTION)
    loc = model.run.table_location("logs")

    def manifests() -> int:  # listed, not opened: a cleanup may remove one meanwhile
        return sum(1 for _ in Path(loc.uri, "_versions").glob("*.manifest"))

    try:
        _log(model, 0, make_trajectory)
        assert held.wait(60)  # the other lane is stuck from the first log on
        logs = 3 * compaction.JOURNAL_COMPACT_AFTER_FRAGMENTS
        for i in range(1, logs):
            _log(model, i, make_trajectory)
        bound = compaction.JOURNAL_COMPACT_AFTER_FRAGMENTS + inline_upkeep.MAINTAIN_EVERY
        deadline = time.monotonic() + 120  # the lane's compaction and cleanup land meanwhile (group: after the last batch)
        while time.monotonic() < deadline and (manifests() > compaction.CLEANUP_AFTER_VERSIONS + 4
                                               or fragments.fragment_count(loc) > bound):
            time.sleep(0.1)
        assert not gate.is_set()
        assert manifests() <= compaction.CLEANUP_AFTER_VERSIONS + 4  # not one per log
        assert fragments.fragment_count(loc) <= bound  # not 48
    finally:
        gate.set()
    assert model.run.wait_for_upkeep(timeout=60)
    assert model.run.logs()["log_id"].to_pylist() == [f"l{i}" for i in range(logs)]
