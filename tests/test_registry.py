"""The store's registry of runs (artstore.log.registry): runs() reads one small table, every run
with a committed log is in it, racing first logs register a run once, and stores written before
the registry are listed by walking them and brought in by `artstore compact --all`."""

from __future__ import annotations

import threading

import artstore as art
from artstore.log import group_commit, registry
from artstore.storage import files, scans


def _log(base: str, project: str, name: str, step: int = 0) -> None:
    art.Model(name=name, project=project, base_path=base, report_metrics=[]).log_sync(
        None, split="val", step=step, metrics={"reward": 0.5})


def test_runs_come_from_the_registry_written_by_each_runs_first_log(tmp_path):
    base = str(tmp_path)
    for project, name in [("b", "m2"), ("a", "m1"), ("b", "m1")]:
        _log(base, project, name)
        _log(base, project, name, step=1)  # later logs register nothing more
    store = art.open_store(base)
    assert [(r.project, r.name) for r in store.runs()] == [("a", "m1"), ("b", "m1"), ("b", "m2")]
    assert [(r.project, r.name) for r in store.runs(projects=["b"])] == [("b", "m1"), ("b", "m2")]
    assert scans.count_rows(registry.location(store.location)) == 3


def test_racing_first_logs_register_a_run_once(tmp_path):
    base = str(tmp_path)
    barrier = threading.Barrier(4)

    def first(i: int) -> None:
        barrier.wait()
        art.Model(name="m", project="p", base_path=base, report_metrics=[]).log_sync(
            None, split="val", step=i, metrics={"reward": float(i)})

    threads = [threading.Thread(target=first, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = art.open_store(base)
    assert [(r.project, r.name) for r in store.runs()] == [("p", "m")]
    assert store.run("p", "m").logs().num_rows == 4


def test_a_store_written_before_the_registry_is_walked_then_registered(tmp_path):
    base = str(tmp_path)
    _log(base, "old", "m")
    group_commit.flush()  # an older artstore's log was committed when it returned
    files.delete(registry.location(art.open_store(base).location))  # as an older artstore left it
    store = art.open_store(base)
    assert [(r.project, r.name) for r in store.runs()] == [("old", "m")]  # found by walking
    _log(base, "new", "m")  # the store's first registration records the old run too
    assert [(r.project, r.name) for r in store.runs()] == [("new", "m"), ("old", "m")]


def test_rescan_records_runs_an_older_artstore_created_since(tmp_path):
    base = str(tmp_path)
    _log(base, "p", "a")
    store = art.open_store(base)
    _log(base, "p", "b")
    group_commit.flush()  # run b's log is committed: its files are copied below
    # An older artstore logs run "c": it never registers.
    files.copy_tree(store.location.child("p", "models", "b"), store.location.child("p", "models", "c"))
    assert [r.name for r in store.runs()] == ["a", "b"]
    assert store.rescan_runs() == 1 and store.rescan_runs() == 0
    assert [r.name for r in store.runs()] == ["a", "b", "c"]
