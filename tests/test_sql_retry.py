"""Store.sql beside a concurrent cleanup (`artstore.read.sql`, READ_ATTEMPTS): another process
that compacts and cleans up with a zero reader window removes the files of the versions a query
pinned, between its planning and its reading. The query runs once more on a fresh snapshot and
answers what it would have answered; when the files go again, SnapshotRemovedError says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import artstore as art
from artstore.log import fold
from artstore.read import pool_scan
from artstore.read.query import Query
from artstore.read.sql import READ_ATTEMPTS, versions_read
from tests.conftest import tool_call_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Another process: it logs `n` more steps, then compacts and cleans up the run with no reader
# window, twice (a cleanup keeps the files of the version it began from, so the second removes
# those the first compaction replaced: the files a query pinned before it).
CLEANER = textwrap.dedent("""
    import json, sys
    from datetime import timedelta
    import artstore as art
    from tests.conftest import tool_call_trajectory
    base, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    model = art.Model(name="m", project="p", base_path=base, storage_options=opts, report_metrics=[], commit="sync")
    for step in range(first, first + n):
        model.log_sync([art.TrajectoryGroup([tool_call_trajectory(0.5, step * 10 + j) for j in range(3)])],
                       split="train", step=step, metrics={"x": float(step)})
    store = art.open_store(base, opts, retention=timedelta(0), reader_window=timedelta(0))
    for _ in range(2):
        store.run("p", "m").compact()
""")

QUERIES = {  # each reads the journal (logs, unfolded rows) and the folded tables
    "SELECT count(*) AS n, sum(reward) AS r FROM trajectories WHERE step < 8": [{"n": 24, "r": 8 * (0.1 + 1.0 + 2.2)}],
    "SELECT count(*) AS n FROM logs WHERE step < 8": [{"n": 8}],
    "SELECT count(*) AS n FROM metrics WHERE name = 'train/x' AND step < 8": [{"n": 8}],
}


def _eight_logs(base: str, opts: dict | None = None) -> None:
    """A run of 8 logs, half of them folded into the data tables, each table in several fragments."""
    model = art.Model(name="m", project="p", base_path=base, storage_options=opts, report_metrics=[], commit="sync")
    for step in range(8):
        model.log_sync([art.TrajectoryGroup([tool_call_trajectory(r, step * 10 + j) for j, r in enumerate((0.1, 1.0, 2.2))])],
                       split="train", step=step, metrics={"x": float(step)})
        if step % 2 and step < 4:
            fold.fold(model.run.location)
    model.run.wait_for_upkeep()


@pytest.fixture
def run_of_eight_logs(tmp_path):
    _eight_logs(str(tmp_path))
    return str(tmp_path)


def _clean_between_planning_and_reading(monkeypatch, base: str, times: int, opts: dict | None = None) -> list[dict]:
    """Before the first read of each of the first `times` query attempts (their runs pinned), run
    the cleaner in another process. Returns [{table: version}] pinned by each attempt it hit."""
    real, hit, seen = Query.guard, [], []  # (the queries kept: an id may be reused)

    def guard(self, table, key, batches):
        if all(q is not self for q in seen) and len(hit) < times:
            seen.append(self)
            snapshot = self.snapshot(key)
            snapshot.dataset(table)  # pinned: the files this attempt reads
            hit.append(dict(snapshot.read))
            env = {**os.environ, "PYTHONPATH": ROOT, "LANCE_LOG": "error"}
            subprocess.run([sys.executable, "-c", CLEANER, base, str(100 * len(hit)), "2",
                            *([json.dumps(opts)] if opts else [])], env=env, check=True, timeout=300)
        return real(self, table, key, batches)

    monkeypatch.setattr(Query, "guard", guard)
    return hit


@pytest.mark.slow
@pytest.mark.parametrize("query", list(QUERIES))
def test_a_query_whose_files_a_concurrent_cleanup_removed_is_read_again_on_a_fresh_snapshot(
        run_of_eight_logs, monkeypatch, query):
    base = run_of_eight_logs
    hit = _clean_between_planning_and_reading(monkeypatch, base, times=1)
    got = art.open_store(base).sql(query)
    assert len(hit) == 1  # the cleanup ran under the first attempt
    assert got.to_pylist() == [pytest.approx(row) for row in QUERIES[query]]
    assert versions_read(got)["p/m"]["logs"] > hit[0]["logs"]  # read again, on the cleaner's version
    monkeypatch.undo()
    assert art.open_store(base).sql("SELECT count(*) AS n FROM logs")["n"].to_pylist() == [10]  # and its 2 logs


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.slow
def test_on_s3_a_query_whose_files_a_concurrent_cleanup_removed_is_read_again_on_a_fresh_snapshot(
        s3_bucket, monkeypatch):
    """The same on a bucket: a file gone there fails with the object store's own wording, which
    the retry must still tell from any other failure."""
    base, opts = s3_bucket.uri, dict(s3_bucket.storage_options)
    _eight_logs(base, opts)
    query = "SELECT count(*) AS n, sum(reward) AS r FROM trajectories WHERE step < 8"
    hit = _clean_between_planning_and_reading(monkeypatch, base, times=1, opts=opts)
    got = art.open_store(base, opts).sql(query)
    assert len(hit) == 1
    assert got.to_pylist() == [pytest.approx(row) for row in QUERIES[query]]
    assert versions_read(got)["p/m"]["logs"] > hit[0]["logs"]
    monkeypatch.undo()
    assert art.open_store(base, opts).sql("SELECT count(*) AS n FROM logs")["n"].to_pylist() == [10]


@pytest.mark.slow
def test_a_query_whose_files_are_removed_at_every_attempt_says_what_to_do(run_of_eight_logs, monkeypatch):
    base = run_of_eight_logs
    # each attempt reads the run's own files (a second attempt may otherwise read the copy the
    # cleaner's compaction put in the store's pool of small runs, which it does not clean)
    monkeypatch.setattr(pool_scan, "share", lambda *a: None)
    hit = _clean_between_planning_and_reading(monkeypatch, base, times=READ_ATTEMPTS)
    with pytest.raises(art.SnapshotRemovedError, match="reader_window") as raised:
        art.open_store(base).sql("SELECT step, sum(reward) AS r FROM trajectories GROUP BY step")
    assert len(hit) == READ_ATTEMPTS
    assert isinstance(raised.value, art.StorageError)  # a storage failure: the store is unchanged
    assert "Not found" in str(raised.value)  # the file that was gone
    monkeypatch.undo()
    assert art.open_store(base).sql("SELECT count(*) AS n FROM trajectories")["n"].to_pylist() == [3 * 12]


def test_a_query_naming_a_missing_version_is_not_retried(run_of_eight_logs, monkeypatch):
    calls = []
    real = Query.__init__
    monkeypatch.setattr(Query, "__init__", lambda self, *a, **kw: (calls.append(1), real(self, *a, **kw))[1])
    with pytest.raises(art.VersionNotFoundError):
        art.open_store(run_of_eight_logs).sql("SELECT count(*) FROM logs", as_of="no-such-tag")
    assert len(calls) == 1
