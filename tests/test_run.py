"""Run's read API on edge cases: empty selections, damaged stores (issue 16)."""

from __future__ import annotations

import pytest

import artstore as art


def _logged(tmp_path, make_trajectory) -> art.Store:
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, 0)])], split="train", step=0)
    return art.open_store(tmp_path)


def test_groups_of_a_step_with_no_rows_is_an_empty_list(tmp_path, make_trajectory):
    run = _logged(tmp_path, make_trajectory).run("p", "m")
    assert run.groups(split="train", step=5) == []
    assert run.groups(split="val") == []
    assert run.trajectories(step=5).num_rows == 0
    assert len(run.groups(split="train", step=0)) == 1


# -- a damaged store reads as damaged, never as empty (issue 16, item 4) ----------------------------
def _damage(run: art.Run, how: str) -> tuple[str, str]:
    """Damage the run as `how` says: (a pattern of the table an error must name, a view that reads it)."""
    import glob
    import os
    import shutil

    d = run.location.uri
    if how == "tables deleted":
        shutil.rmtree(f"{d}/trajectories.lance")
        shutil.rmtree(f"{d}/metrics.lance")
        return r"(trajectories|metrics)\.lance", "trajectories"
    if how == "logs manifest zero-filled":
        newest = max(glob.glob(f"{d}/logs.lance/_versions/*.manifest"), key=os.path.getmtime)
        with open(newest, "r+b") as f:
            f.write(b"\0" * os.path.getsize(newest))
        return r"logs\.lance", "logs"
    shutil.rmtree(f"{d}/groups.lance/_versions")
    return r"groups\.lance", "groups"


@pytest.mark.parametrize(("how", "layout"), [
    ("tables deleted", "data tables"), ("logs manifest zero-filled", "data tables"),
    ("groups versions deleted", "data tables"), ("logs manifest zero-filled", "journal")])
def test_a_damaged_run_raises_a_storage_error_naming_the_table(tmp_path, make_trajectory, how, layout):
    import pyarrow as pa

    from artstore.log import journal
    from artstore.schema import arrow_schema
    from artstore.storage import datasets, writes

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    if layout == "data tables":  # a run whose logs table predates the journal: rows go to the data tables
        old = pa.schema([f for f in arrow_schema("logs") if f.name not in journal.PAYLOAD_COLUMNS])
        writes.create(model.run.table_location("logs"), old.empty_table())
    for step in range(3):
        model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, i) for i in range(2)])], split="train", step=step)
    model.flush()  # group mode: the newest manifest, damaged below, is the last log's
    store = art.open_store(tmp_path)
    run = store.run("p", "m")
    table, view = _damage(run, how)
    reads = {"groups": run.groups, "validate": run.validate, "sql": lambda: store.sql(f"SELECT count(*) FROM {view}")}
    if how != "groups versions deleted":
        reads.update(trajectories=run.trajectories, metrics=run.metrics, history=run.history)
    for name, read in reads.items():
        with pytest.raises(art.StorageError, match=table):
            read()
        assert name
    with pytest.raises(art.StorageError, match=table):  # and no new table hides it
        model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, 9)])], split="train", step=9)
    if how == "tables deleted":
        assert not datasets.exists(run.table_location("trajectories"))

    from typer.testing import CliRunner

    from artstore.cli import app

    result = CliRunner().invoke(app, ["validate", "--store", str(tmp_path)])
    assert result.exit_code == 1 and "DAMAGED p/m" in result.output


def test_validate_passes_a_sound_store_and_exits_0(tmp_path, make_trajectory):
    from typer.testing import CliRunner

    from artstore.cli import app

    store = _logged(tmp_path, make_trajectory)
    assert set(store.run("p", "m").validate()) >= {"logs", "trajectories", "groups", "metrics"}
    result = CliRunner().invoke(app, ["validate", "--store", str(tmp_path)])
    assert result.exit_code == 0 and "ok p/m" in result.output
