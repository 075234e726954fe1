"""Folds of quiet runs (artstore.log.idle_fold): a small run's logs, fewer than a fold's period,
leave the journal once the run goes quiet, or when the writing process exits, and every read
(latest, SQL, as_of an earlier log) gives what it gave before."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc

import artstore as art
from artstore.log import fold, idle_fold, journal, pending_deletes, upkeep
from artstore.storage import Location, datasets, pending, scans
from tests.test_sql import rollout

ROOT = Path(__file__).resolve().parent.parent
AGGREGATE = "SELECT step, split, avg(reward) AS r, count(*) AS n FROM trajectories GROUP BY ALL ORDER BY ALL"


def _unfolded_payloads(run: art.Run) -> int:
    """Payload cells (trajectories, groups) the run's journal still holds."""
    rows = scans.scan(run.table_location("logs"), columns=list(journal.IPC_COLUMN.values()))
    return sum(rows.num_rows - pc.sum(pc.is_null(rows[c])).as_py() for c in journal.IPC_COLUMN.values())


def _folded_through(run: art.Run) -> dict[str, int]:
    return {t: journal.folded_seq(datasets.open_dataset(run.table_location(t))) for t in fold.GATED}


def _log_small_run(base: str) -> tuple[art.Run, list[int]]:
    model = art.Model(name="m", project="p", base_path=base, report_metrics=[])
    records = []
    for step in range(3):
        for split in ("train", "val"):
            group = art.TrajectoryGroup([rollout(step / 4 + i / 8, i) for i in range(3)])
            records.append(model.log_sync([group], split=split, step=step))
    model.flush()  # group mode: each record's logs_version is set once its commit lands
    return model.run, [r.logs_version for r in records]


def test_a_quiet_small_run_is_folded_and_reads_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(idle_fold, "FOLD_IDLE_S", 0.2)
    run, versions = _log_small_run(str(tmp_path))
    assert len(versions) < fold.FOLD_EVERY  # no fold asked for by the logs themselves
    store = art.open_store(str(tmp_path))
    before = (run.trajectories(), run.history(), store.sql(AGGREGATE), run.trajectories(as_of=versions[2]))
    deadline = time.monotonic() + 60
    while _unfolded_payloads(run) and time.monotonic() < deadline:
        time.sleep(0.2)
        upkeep.wait(timeout=60)
    assert _unfolded_payloads(run) == 0
    last = run.logs()["commit_seq"][-1].as_py()
    assert _folded_through(run) == dict.fromkeys(fold.GATED, last)
    fresh = art.open_store(str(tmp_path))
    again = fresh.run("p", "m")
    assert (again.trajectories(), again.history(), fresh.sql(AGGREGATE),
            again.trajectories(as_of=versions[2])) == before


def test_a_writer_that_exits_folds_its_quiet_runs_and_prints_nothing(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import artstore as art
        from tests.test_sql import rollout
        model = art.Model(name="m", project="p", base_path=sys.argv[1], report_metrics=[])
        for step in range(2):
            model.log_sync([art.TrajectoryGroup([rollout(0.5, i) for i in range(3)])], split="train", step=step)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
    run = art.open_store(str(tmp_path)).run("p", "m")
    assert _unfolded_payloads(run) == 0
    assert run.trajectories().num_rows == 6
    assert _folded_through(run) == dict.fromkeys(fold.GATED, run.logs()["commit_seq"][-1].as_py())


def test_a_bucket_whose_deletes_hang_holds_no_other_runs_quiet_fold(monkeypatch):
    monkeypatch.setattr(idle_fold, "FOLD_IDLE_S", 0.1)
    hung, stuck = Location.parse("s3://hung/p/models/a"), threading.Event()
    quiet = Location.parse("s3://quiet/p/models/b")
    release, folded = threading.Event(), []

    def delete(run, names):  # the hung bucket's delete hangs until the test ends
        if run == hung:
            stuck.set()
            release.wait(60)

    monkeypatch.setattr(pending, "delete", delete)
    monkeypatch.setattr(upkeep, "request_fold", lambda run, window: folded.append(run))
    monkeypatch.setattr(upkeep, "request_stats", lambda run, window: None)
    try:
        pending_deletes.done(hung, ["a.pending"])  # committed, waiting for a batch
        idle_fold.note(hung, timedelta(seconds=1))
        assert stuck.wait(30)  # the hung run went quiet: its delete hangs
        idle_fold.note(quiet, timedelta(seconds=1))
        deadline = time.monotonic() + 30
        while quiet not in folded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert folded == [hung, quiet]  # asked for while the other bucket's delete still hangs
        assert pending_deletes.waiting(hung, "a.pending") is False  # taken by the drain under way
    finally:
        release.set()
        idle_fold.drop_waiting()
        pending_deletes.forget()
