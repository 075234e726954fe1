"""A cross-run query skips reading a run's logs only when the store's registry proves, by the
commit-check counts of exactly the pinned logs version, that its data table holds only visible
rows (`RunSnapshot.proven_by_registry`). Any doubt reads the logs and filters as before.

Each test reads real runs on disk through Store.sql and records which runs' logs the query read
(the real `committed_logs`, wrapped to note its calls).
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

import artstore as art
from artstore.log import fold, registry, run_pool, run_stats
from artstore.read import scan
from artstore.storage import writes

SQL = "SELECT model, step, count(*) AS n, sum(reward) AS r FROM trajectories GROUP BY ALL ORDER BY ALL"


@pytest.fixture(autouse=True)
def _no_background_refresh(monkeypatch):
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 3600.0)  # the tests decide when the registry is refreshed
    monkeypatch.setattr(run_pool, "MAX_ROWS", 0)  # no run in the store's pool: each run's own tables are read


@pytest.fixture
def logs_read(monkeypatch):
    """The runs ("project/model") whose logs a query read, one entry per read."""
    seen: list[str] = []
    real = scan.committed_logs

    def noting(loc, *args, **kwargs):
        seen.append("/".join(loc.uri.rstrip("/").split("/")[-4:-1:2]))
        return real(loc, *args, **kwargs)

    monkeypatch.setattr(scan, "committed_logs", noting)
    with scan._COMMITTED_LOCK:  # nothing kept from an earlier test's query
        scan._COMMITTED.clear()
    return seen


def _log(model: art.Model, step: int) -> None:
    group = art.TrajectoryGroup([art.Trajectory(messages_and_choices=[{"role": "user", "content": f"{step}.{i}"}],
                                                reward=step + i / 4) for i in range(2)])
    model.log_sync([group], split="train", step=step)


def two_folded_runs(base) -> art.Store:
    """Two runs of two folded steps each, their registry stats refreshed (which also copies them to
    the store's pool, where that is on)."""
    for name in ("a", "b"):
        model = art.Model(name=name, project="p", base_path=str(base), report_metrics=[])
        for step in range(2):
            _log(model, step)
            model.flush()  # a commit per log: both runs' logs tables have the same versions (as_of=V)
        fold.fold(model.run.location)
    s = art.open_store(base)
    assert s.refresh_run_stats() == 2
    return s


@pytest.fixture
def store(tmp_path):
    return two_folded_runs(tmp_path)


def _expected(models: dict[str, int]) -> list[dict]:
    return [{"model": m, "step": s, "n": 2, "r": 2 * s + 0.25} for m, steps in sorted(models.items())
            for s in range(steps)]


def test_registry_counts_of_the_pinned_version_skip_reading_the_logs(store, logs_read):
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert logs_read == []


def test_a_stale_registry_entry_reads_the_logs_and_sees_the_new_log(store, logs_read):
    model = art.Model(name="a", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)  # not refreshed: the registry holds the counts of an older logs version
    fold.fold(model.run.location)
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 3, "b": 2})
    assert logs_read == ["p/a"]


def test_rows_of_a_crashed_writer_are_filtered_although_the_registry_is_current(store, logs_read):
    run = store.run("p", "a")
    orphans = run.read_table("trajectories").slice(0, 2)
    orphans = orphans.set_column(orphans.schema.get_field_index("write_id"), "write_id", pa.array(["crashed"] * 2))
    writes.append(run.table_location("trajectories"), orphans)  # rows no committed log names
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert logs_read == ["p/a"]


def test_counts_of_another_run_with_the_same_version_number_are_not_used(store, logs_read):
    # a run deleted and logged again reaches the same version numbers: the commit time tells them apart
    stats = run_stats.compute(store.run("p", "b").location)
    stats["logs_committed_at"] -= timedelta(seconds=1)
    assert registry.write_stats(store.location, "p", "b", stats)
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 2})
    assert logs_read == ["p/b"]


def test_a_log_not_folded_yet_is_read_from_the_journal(store, logs_read):
    model = art.Model(name="b", project="p", base_path=store.uri, report_metrics=[])
    _log(model, 2)  # in the journal only
    assert store.refresh_run_stats(["p"]) == 2  # the registry is current, but the table is not folded up to it
    assert art.open_store(store.uri).sql(SQL).to_pylist() == _expected({"a": 2, "b": 3})
    assert logs_read == ["p/b"]


def test_a_query_as_of_a_version_reads_the_logs(store, logs_read):
    version = store.run("p", "a").versions()[-1]["version"]
    got = art.open_store(store.uri).sql(SQL, as_of={"p/a": version})
    assert got.to_pylist() == _expected({"a": 2, "b": 2})
    assert logs_read == ["p/a"]


def test_a_query_over_history_and_trajectories_at_once_answers(store, logs_read):
    # history reads snapshots under the query's lock while trajectories' scans read the registry
    # under a snapshot's: the registry has its own lock, so the two never wait on each other
    got = art.open_store(store.uri).sql(
        "SELECT t.model, t.step, count(*) AS n FROM trajectories t JOIN history h USING (project, model, step) "
        "GROUP BY ALL ORDER BY ALL")
    assert got.to_pylist() == [{"model": m, "step": s, "n": 2} for m in ("a", "b") for s in range(2)]
