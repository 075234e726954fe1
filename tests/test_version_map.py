"""Time travel after cleanup: a journal run keeps its physical versions only for the reader window,
and every older version of its logs is answered from the run's version map
(`artstore.storage.version_map`) exactly as it was answered before the cleanup removed it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from datetime import timedelta

import pyarrow as pa
import pytest

import artstore as art
from artstore.errors import VersionNotFoundError
from artstore.storage import Location, compaction, datasets, files, keys, version_map

NO_WINDOW = timedelta(0)


def _log_steps(model: art.Model, make_trajectory, steps: range) -> None:
    for step in steps:
        model.config = {"lr": step}  # a config per step: config(as_of) must follow it
        model.log_sync(art.TrajectoryGroup([make_trajectory(step / 10, step), make_trajectory(step / 20, step)]),
                       split="train", step=step, log_id=f"t{step}")
        model.log_sync(None, split="val", step=step, metrics={"reward": (step * 7 % 5) / 5}, log_id=f"v{step}")


def _answers(store: art.Store, run: art.Run, as_of) -> dict:
    """Everything a reader may ask of the run as of `as_of`."""
    sql = store.sql("SELECT split, step, count(*) AS n, sum(reward) AS r FROM trajectories "
                    "GROUP BY split, step ORDER BY split, step", as_of=as_of)
    return {
        "logs": run.logs(as_of=as_of).select(["log_id", "write_id", "split", "step"]),
        "trajectories": run.trajectories(as_of=as_of).select(["trajectory_id", "reward", "step"]),
        "groups": run.groups(as_of=as_of),
        "metrics": run.metrics(as_of=as_of),
        "history": run.history(as_of=as_of),
        "best": run.best_step("val/reward", as_of=as_of) if run.history(as_of=as_of).num_rows > 1 else None,
        "summary": run.step_summary(as_of=as_of).means("val/reward"),
        "config": run.config(as_of=as_of),
        "sql": sql.replace_schema_metadata(None),
        "sql_history": store.sql("SELECT * FROM history ORDER BY step, recorded_at",
                                 as_of=as_of).replace_schema_metadata(None),
        "plan": _plan_rows(store, as_of),
    }


def _plan_rows(store: art.Store, as_of) -> list:
    parts = store.snapshot(as_of=as_of).scan_parts("trajectories", columns=["trajectory_id", "reward"])
    rows = pa.concat_tables([p.read() for p in parts]) if parts else None
    return [] if rows is None else sorted(rows.select(["trajectory_id", "reward"]).to_pylist(), key=str)


def _clean(uri: str, opts=None) -> None:
    """Fold, compact and clean every table of the run with no reader window (the journal's
    payloads are dropped too): only the latest versions (and tagged ones) stay."""
    store = art.open_store(uri, opts, reader_window=NO_WINDOW)
    store.run("p", "m").compact()


def test_every_cleaned_version_answers_as_before_its_removal(store_location, make_trajectory):
    uri, opts = store_location
    model = store_location.model(name="m", project="p")
    _log_steps(model, make_trajectory, range(6))
    store, run = store_location.store(), store_location.store().run("p", "m")
    run.wait_for_upkeep()
    listed = run.versions()
    versions = [v["version"] for v in listed]
    before = {v: _answers(store, run, v) for v in versions}
    at_time = listed[len(listed) // 2]["timestamp"]
    before_time = _answers(store, run, at_time)

    _clean(uri, opts)
    physical = [v["version"] for v in datasets.versions(run.table_location("logs"))]
    assert len(physical) < 3 < len(versions)  # cleanup removed them
    assert [v["version"] for v in run.versions()][: len(versions)] == versions  # still listed, from the map
    for v in versions:
        assert _answers(store, run, v) == before[v], f"version {v}"
    assert _answers(store, run, at_time) == before_time


def test_a_version_never_mapped_is_not_found(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    _clean(str(tmp_path))
    latest = datasets.latest_version(model.run.table_location("logs"))
    with pytest.raises(VersionNotFoundError):
        model.run.logs(as_of=latest + 5)


def test_a_checkpoints_pinned_logs_version_is_answered_after_cleanup(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(3))
    run = model.run
    checkpoint = run.register_checkpoint(2, uri=str(tmp_path / "ckpt"), size_bytes=1)
    pinned = checkpoint.table_versions["logs"]
    before = run.trajectories(as_of=pinned)
    _log_steps(model, make_trajectory, range(3, 6))
    _clean(str(tmp_path))
    with pytest.raises(VersionNotFoundError):
        datasets.open_dataset(run.table_location("logs"), version=pinned)
    assert run.trajectories(as_of=pinned) == before


def test_a_reader_pinned_to_a_version_being_cleaned_up_reads_the_same(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(4))
    run = model.run
    run.wait_for_upkeep()
    version = run.versions()[3]["version"]
    want = run.trajectories(as_of=version)
    store = art.open_store(str(tmp_path), reader_window=NO_WINDOW)
    cleaner = threading.Thread(target=store.run("p", "m").compact)
    cleaner.start()
    got = []
    while cleaner.is_alive():
        got.append(run.trajectories(as_of=version))
    cleaner.join()
    got.append(run.trajectories(as_of=version))
    assert all(g == want for g in got)


def _record_then_die(logs_uri: str) -> None:
    """Upkeep killed between writing the map and removing the versions it maps."""
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    from lance import LanceDataset
    LanceDataset.cleanup_old_versions = die
    loc = Location.parse(logs_uri)
    compaction._last_cleanup.pop(loc.uri, None)
    compaction.maintain(loc, "logs", NO_WINDOW, compact=False)


def test_upkeep_killed_between_the_map_and_the_cleanup_loses_no_version(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(4))
    run = model.run
    run.wait_for_upkeep()
    loc = run.table_location("logs")
    versions = [v["version"] for v in run.versions()]
    before = {v: run.history(as_of=v) for v in versions}
    child = multiprocessing.get_context("spawn").Process(target=_record_then_die, args=(loc.uri,))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    mapped = version_map.entries(loc)["version"].to_pylist()
    assert set(versions) <= set(mapped)  # the map was written, nothing removed yet
    assert {v: run.history(as_of=v) for v in versions} == before
    _log_steps(model, make_trajectory, range(4, 6))
    _clean(str(tmp_path))  # the next cleanup maps only what is new, and removes the old versions
    entries = version_map.entries(loc)["version"].to_pylist()
    assert entries == sorted(set(entries))
    assert {v: run.history(as_of=v) for v in versions} == before


def test_the_map_merges_its_files_and_keeps_every_entry(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    loc = model.run.table_location("logs")
    for i in range(version_map.MERGE_AFTER + 3):
        _log_steps(model, make_trajectory, range(i, i + 1))
        recorded = datasets.open_dataset(loc)  # (background upkeep may commit after it: compare with it)
        version_map.record(loc, recorded)
    names = files.list_dir(loc.child(version_map.MAP_DIR))
    assert len(names) <= version_map.MERGE_AFTER
    mapped = version_map.entries(loc)["version"].to_pylist()
    assert mapped[:recorded.version] == list(range(1, recorded.version + 1))


def test_the_versions_command_names_the_log_of_a_cleaned_up_version(tmp_path, make_trajectory, monkeypatch):
    monkeypatch.setenv("ARTSTORE_COMMIT", "sync")  # sync: the versions named below are one per log
    import json

    from typer.testing import CliRunner

    from artstore.cli import app

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(3))
    model.run.wait_for_upkeep()

    def listed() -> dict:
        result = CliRunner().invoke(app, ["versions", "p/m", "--store", str(tmp_path), "-f", "json"])
        assert result.exit_code == 0, result.output
        return {v["version"]: v["log"] for v in json.loads(result.stdout)}

    before = listed()
    assert {f"t{s}" for s in range(3)} | {f"v{s}" for s in range(3)} <= set(before.values())
    _clean(str(tmp_path))
    after = listed()
    assert len(datasets.versions(model.run.table_location("logs"))) < len(before)
    assert {v: after[v] for v in before} == before


def test_an_early_version_of_a_long_run_reads_only_its_own_logs_rows(tmp_path, make_trajectory, monkeypatch):
    # A run past SMALL_ROWS logs reads its logs by a scan: time travel to step 1 of a long run
    # read every row of the journal (20,000 at step 10,000) to keep a few.
    monkeypatch.setattr(keys, "SMALL_ROWS", 0)
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run = model.run
    early = run.versions()[-1]["version"]
    before = {"history": run.history(as_of=early), "logs": run.logs(as_of=early),
              "trajectories": run.trajectories(as_of=early)}
    _log_steps(model, make_trajectory, range(2, 30))
    model.flush()
    _clean(str(tmp_path))
    with pytest.raises(VersionNotFoundError):  # answered through the version map
        datasets.open_dataset(run.table_location("logs"), version=early)
    scanned: list[int] = []
    scanner = type(datasets.open_dataset(run.table_location("logs")).scanner())
    real = scanner.to_table

    def counted(self):
        table = real(self)
        # not the background threads': a stats refresh due from the logs above (5 s on) scans the
        # whole journal, and on a loaded machine it fell inside the reads below
        background = threading.current_thread().name.startswith(("artstore-upkeep", "artstore-idle-fold",
                                                                  "artstore-group-commit"))
        if self._ds.uri.rstrip("/").endswith("logs.lance") and not background:
            scanned.append(table.num_rows)
        return table

    monkeypatch.setattr(scanner, "to_table", counted)
    assert run.history(as_of=early) == before["history"]
    assert run.logs(as_of=early) == before["logs"]
    assert run.trajectories(as_of=early) == before["trajectories"]
    assert scanned and max(scanned) == before["logs"].num_rows == 4  # of the journal's 60
