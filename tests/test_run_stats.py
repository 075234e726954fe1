"""Runs' stats in the store's registry (artstore.log.run_stats): right after the upkeep thread's
refresh, never moved backwards, consistent after a writer is SIGKILLed, read by `artstore runs`
and `Store.run_stats()` in one scan without opening any run's files, and computed on the fly for
runs that have none (a registry written before the stats)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from typer.testing import CliRunner

import artstore as art
from artstore.cli import app
from artstore.log import group_commit, registry, run_stats, upkeep
from artstore.read.sql import versions_read
from artstore.storage import Location, compaction, datasets, files, fragments, scans, writes
from tests.test_sql import rollout

ROOT = Path(__file__).resolve().parent.parent


def _group(*rewards: float) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([rollout(r, i) for i, r in enumerate(rewards)])


def _settled(base: str) -> bool:
    """This process's queued logs committed (group mode asks for the stats refresh at the commit),
    then this store's upkeep and stats refreshes done (an earlier test's runs, e.g. on a bucket
    whose server has stopped, are not waited for)."""
    group_commit.flush()
    return upkeep.wait(Location.parse(base), timeout=60)


def _stats(store: art.Store) -> dict[str, dict]:
    return {f"{r['project']}/{r['model']}": r for r in store.run_stats().to_pylist()}


def test_stats_after_upkeep_match_what_the_run_reads(tmp_path):
    base = str(tmp_path)
    m = art.Model(name="a", project="p", base_path=base, report_metrics=[], config={"lr": 0.1})
    m.log_sync([_group(0.25, 0.75)], split="val", step=0)
    m.log_sync([_group(0.0, 0.5), _group(1.0, 1.0)], split="train", step=1)
    m.log_sync([_group(0.5, 1.0)], split="val", step=3)
    m.log_sync(None, split="train", step=2, metrics={"loss": 0.3})
    art.Model(name="b", project="q", base_path=base, report_metrics=[]).log_sync(None, split="val", step=7,
                                                                                  metrics={"reward": 0.9})
    assert _settled(base)
    store = art.open_store(base)
    got = _stats(store)
    assert list(got) == ["p/a", "q/b"]
    run = store.run("p", "a")
    logs, history = run.logs(), run.history()
    a = got["p/a"]
    assert a["logs"] == logs.num_rows == 4
    assert a["trajectories"] == pc.sum(logs["num_trajectories"]).as_py() == 8
    assert a["last_step"] == 3
    assert a["last_logged_at"] == logs["recorded_at"][-1].as_py()
    assert a["val_reward"] == history.filter(pc.is_valid(history["val/reward"]))["val/reward"][-1].as_py() == 0.75
    assert a["train_reward"] == history.filter(pc.is_valid(history["train/reward"]))["train/reward"][-1].as_py()
    assert json.loads(a["config"]) == run.config() and run.config()["model"] == {"lr": 0.1}
    assert 0 < a["size_bytes"] <= run.size_bytes()
    assert a["logs_version"] == datasets.latest_version(run.table_location("logs"))
    assert (got["q/b"]["logs"], got["q/b"]["last_step"], got["q/b"]["val_reward"]) == (1, 7, 0.9)
    assert store.run_stats(projects=["q"])["model"].to_pylist() == ["b"]


def test_a_refresh_never_replaces_stats_with_older_ones(tmp_path):
    base = str(tmp_path)
    m = art.Model(name="a", project="p", base_path=base, report_metrics=[])
    for step in range(3):
        m.log_sync(None, split="val", step=step, metrics={"reward": step / 2})
    assert _settled(base)
    store = art.open_store(base)
    newest = _stats(store)["p/a"]
    older = {**newest, "logs": 1, "last_step": 0, "logs_version": newest["logs_version"] - 2}
    assert not registry.write_stats(store.location, "p", "a", older)  # e.g. a slower writer's refresh
    assert _stats(store)["p/a"]["logs"] == 3
    assert scans.count_rows(registry.location(store.location)) == 1  # one row per run, replaced in place


def test_log_commits_nothing_to_the_registry_until_the_delayed_refresh(tmp_path, monkeypatch):
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 600.0)  # however slow the machine: wait() brings it
    base = str(tmp_path)
    m = art.Model(name="a", project="p", base_path=base, report_metrics=[])
    m.log_sync(None, split="val", step=0, metrics={"reward": 0.1})
    loc = registry.location(art.open_store(base).location)
    registered = datasets.latest_version(loc)  # the first log registered the run: one commit
    for step in range(1, 6):
        m.log_sync(None, split="val", step=step, metrics={"reward": 0.1})
    assert datasets.latest_version(loc) == registered  # no log commits to the registry itself
    assert _settled(base)
    assert datasets.latest_version(loc) == registered + 1  # the six logs share one refresh
    assert _stats(art.open_store(base))["p/a"]["logs"] == 6


WRITER = textwrap.dedent("""
    import sys, artstore as art
    from artstore.log import run_stats
    run_stats.STATS_DELAY_S = 0.0  # refresh after every log: a kill lands inside refreshes too
    m = art.Model(name="a", project="p", base_path=sys.argv[1], report_metrics=[])
    step = 0
    while True:
        m.log_sync(None, split="val", step=step, metrics={"reward": step / 100})
        print(step, flush=True)
        step += 1
""")


def test_a_killed_writer_leaves_the_registry_readable_and_compact_makes_it_exact(tmp_path):
    base = str(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANCE_LOG": "error"}
    for kill_after in (5, 12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, base], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        for _ in range(kill_after):
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = art.open_store(base)
        logs = store.run("p", "a").logs().num_rows
        listed = _stats(store)["p/a"]  # the registry reads whole, at most as far as the logs went
        assert 1 <= listed["logs"] <= logs
        assert listed["last_step"] <= pc.max(store.run("p", "a").logs()["step"]).as_py()
    store.run("p", "a").compact()
    exact = _stats(art.open_store(base))["p/a"]
    logs = store.run("p", "a").logs()
    assert (exact["logs"], exact["last_step"]) == (logs.num_rows, pc.max(logs["step"]).as_py())


def test_artstore_runs_reads_only_the_registry(tmp_path, monkeypatch):
    base = str(tmp_path)
    for name in ("a", "b", "c"):
        art.Model(name=name, project="p", base_path=base, report_metrics=[]).log_sync(
            [_group(0.5)], split="train", step=1)
    assert _settled(base)
    # junk in a run's folder that a walk would trip over
    (tmp_path / "p" / "models" / "b" / "junk.lance").mkdir()
    opened: list[str] = []
    real_open = datasets.open_dataset

    def recording_open(loc, *args, **kwargs):
        if loc.uri.startswith(base):  # an earlier test's background upkeep may open its own store's
            opened.append(loc.uri)
        return real_open(loc, *args, **kwargs)

    def no_walk(*args, **kwargs):
        raise AssertionError("artstore runs walked the store's files")

    monkeypatch.setattr(datasets, "open_dataset", recording_open)
    for name in ("walk", "size", "glob", "list_dir"):
        monkeypatch.setattr(files, name, no_walk)
    result = CliRunner().invoke(app, ["runs", "--store", base, "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(r["model"], r["logs"], r["trajectories"], r["train/reward"]) for r in listed] == \
        [("a", 1, 1, 0.5), ("b", 1, 1, 0.5), ("c", 1, 1, 0.5)]
    assert all(r["size_bytes"] > 0 for r in listed)
    assert opened == [registry.location(art.open_store(base).location).uri]


def test_a_registry_without_stats_is_listed_with_stats_computed_then_upgraded(tmp_path):
    base = str(tmp_path)
    m = art.Model(name="a", project="p", base_path=base, report_metrics=[])
    m.log_sync(None, split="val", step=0, metrics={"reward": 0.25})
    assert _settled(base)
    store = art.open_store(base)
    loc = registry.location(store.location)
    files.delete(loc)  # as the registry's first version left it: no stats columns
    writes.append(loc, pa.table({"project": ["p"], "model": ["a"], "registered_at": [writes.now_utc()]},
                                schema=pa.schema([f for f in registry.rows([]).schema][:3])))
    assert _stats(store)["p/a"]["val_reward"] == 0.25  # computed from the run: it has no stats stored
    m.log_sync(None, split="val", step=1, metrics={"reward": 0.5})
    assert _settled(base)
    stored = registry.read_stats(store.location).to_pylist()
    assert [(r["model"], r["logs"], r["val_reward"]) for r in stored] == [("a", 2, 0.5)]


def test_a_run_without_stats_yet_is_listed_from_its_files(tmp_path):
    base = str(tmp_path)
    art.Model(name="a", project="p", base_path=base, report_metrics=[]).log_sync(
        None, split="val", step=4, metrics={"reward": 0.5})
    store = art.open_store(base)
    registry.register(store.location, "p", "never-logged")  # a first log that then failed
    got = _stats(store)
    assert got["p/a"]["last_step"] == 4  # before its refresh: computed now
    assert got["p/never-logged"]["logs"] == 0
    result = CliRunner().invoke(app, ["runs", "--store", base, "--format", "csv"])
    assert result.exit_code == 0 and "never-logged" not in result.output and "p,a,4" in result.output.replace('"', "")


def test_a_query_pinned_to_one_run_opens_that_run_only_and_answers_as_the_full_query(tmp_path):
    base = str(tmp_path)
    for i in range(4):
        art.Model(name=f"m{i}", project="p", base_path=base, report_metrics=[]).log_sync(
            [_group(i / 4, 1.0)], split="train", step=0)
    store = art.open_store(base)
    pinned = store.sql("SELECT model, avg(reward) AS r FROM trajectories WHERE project = ? AND model = ? GROUP BY ALL",
                       ["p", "m2"])
    assert list(versions_read(pinned)) == ["p/m2"]
    every = store.sql("SELECT model, avg(reward) AS r FROM trajectories GROUP BY ALL ORDER BY ALL")
    assert sorted(versions_read(every)) == ["p/m0", "p/m1", "p/m2", "p/m3"]
    assert pinned.to_pylist() == [r for r in every.to_pylist() if r["model"] == "m2"] == [{"model": "m2", "r": 0.75}]


def test_stats_refresh_of_a_run_outside_a_store_layout_does_nothing(tmp_path):
    assert run_stats.refresh(art.open_store(str(tmp_path)).location) is False
    assert not (tmp_path / registry.NAME).exists()


def test_the_registry_stays_compact_however_many_runs_refresh(tmp_path, monkeypatch):
    base = str(tmp_path)
    names = [f"m{i:02d}" for i in range(2 * upkeep.REGISTRY_MAX_FRAGMENTS)]
    for n in names:  # each refresh rewrites its run's row into a fragment of its own
        art.Model(name=n, project="p", base_path=base, report_metrics=[]).log_sync(
            None, split="val", step=1, metrics={"reward": 0.5})
        assert _settled(base)
    store = art.open_store(base)
    loc = registry.location(store.location)
    assert fragments.fragment_count(loc) <= upkeep.REGISTRY_MAX_FRAGMENTS + 1
    assert [(r["model"], r["logs"]) for r in registry.read_stats(store.location).to_pylist()] == \
        [(n, 1) for n in names]


def test_the_registry_keeps_few_versions_however_often_one_run_refreshes(tmp_path):
    # One run's refresh replaces its row: its old fragment goes, so fragments never pile up, but
    # each refresh is a version (4 files). A 10,000-step run left 559 files in `_runs.lance`.
    base = str(tmp_path)
    model = art.Model(name="m", project="p", base_path=base, report_metrics=[])
    refreshes = 3 * compaction.CLEANUP_AFTER_VERSIONS
    for step in range(refreshes):
        model.log_sync(None, split="val", step=step, metrics={"reward": 0.5})
        model.flush()
        upkeep._refresh_stats(model.run.location, timedelta(0))  # window 0: only the latest is read
    loc = registry.location(art.open_store(base).location)
    versions = datasets.open_dataset(loc).versions()
    assert versions[-1]["version"] >= refreshes  # every refresh committed a version
    assert len(versions) <= compaction.CLEANUP_AFTER_VERSIONS + 1
    assert len(os.listdir(Path(loc.uri) / "_versions")) <= compaction.CLEANUP_AFTER_VERSIONS + 1
    assert [(r["model"], r["logs"]) for r in registry.read_stats(art.open_store(base).location).to_pylist()] == \
        [("m", refreshes)]
