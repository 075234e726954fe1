"""storage.tables: the parts the read side builds on (time travel by datetime, Arrow datasets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import artstore as art
from artstore.storage import Location, tables


def test_asof_a_timezone_aware_datetime_opens_the_version_committed_at_or_before_it(tmp_path):
    loc = Location.parse(tmp_path / "t.lance")
    for i in range(3):
        tables.append(loc, pa.table({"x": [i]}))
    listed = tables.versions(loc)
    for v in listed:  # a version's own timestamp opens that version
        assert tables.open_dataset(loc, asof=v["timestamp"]).version == v["version"]
        assert tables.version_timestamp(loc, v["version"]) == v["timestamp"]
    assert tables.open_dataset(loc, asof=datetime.now(UTC) + timedelta(days=1)).version == listed[-1]["version"]
    with pytest.raises(art.VersionNotFoundError, match="no version at or before"):
        tables.open_dataset(loc, asof=listed[0]["timestamp"] - timedelta(seconds=1))
    assert tables.open_dataset(Location.parse(tmp_path / "missing.lance"), asof=datetime.now(UTC)) is None


def test_arrow_dataset_is_a_pyarrow_dataset_with_its_version(tmp_path):
    import pyarrow.dataset as pads

    loc = Location.parse(tmp_path / "t.lance")
    tables.append(loc, pa.table({"x": [1, 2]}))
    tables.append(loc, pa.table({"x": [3]}))
    ds, version = tables.arrow_dataset(loc, version=1)
    assert isinstance(ds, pads.Dataset) and version == 1
    assert ds.scanner(columns=["x"], filter=pads.field("x") > 1).to_table()["x"].to_pylist() == [2]
    assert tables.arrow_dataset(Location.parse(tmp_path / "missing.lance")) is None


async def test_run_reads_as_of_a_datetime(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    await model.log([art.TrajectoryGroup([make_trajectory(0.5)])])
    between = datetime.now(UTC)
    await model.log([art.TrajectoryGroup([make_trajectory(0.7, 1)])], step=1)
    assert model.run.trajectories(as_of=between)["reward"].to_pylist() == [0.5]


def test_written_files_are_invisible_until_committed_and_discarding_removes_them(tmp_path):
    from artstore.storage import files

    loc = Location.parse(tmp_path / "t.lance")
    tables.append(loc, pa.table({"x": [1]}))
    kept, dropped = tables.write_files(loc, pa.table({"x": [2, 3]})), tables.write_files(loc, pa.table({"x": [4]}))
    assert tables.open_dataset(loc).to_table()["x"].to_pylist() == [1]  # written, not committed
    assert len(files.list_dir(loc.child("data"))) == 3
    tables.discard_files(loc, dropped)
    assert len(files.list_dir(loc.child("data"))) == 2
    assert tables.commit_files(loc, kept, pa.schema([("x", pa.int64())]), "m") == 2
    assert tables.open_dataset(loc).to_table()["x"].to_pylist() == [1, 2, 3]
    new = Location.parse(tmp_path / "new.lance")  # the first commit creates the dataset
    assert tables.commit_files(new, tables.write_files(new, pa.table({"x": [5]})), pa.schema([("x", pa.int64())])) == 1
    assert tables.open_dataset(new).to_table()["x"].to_pylist() == [5]


def test_committing_on_an_older_read_version_keeps_every_commit_since(tmp_path):
    """`commit_files(read_version=)`: the writer read the table at v1, others appended since."""
    loc = Location.parse(tmp_path / "t.lance")
    read = tables.append(loc, pa.table({"x": [1]}))
    mine = tables.write_files(loc, pa.table({"x": [9]}))
    tables.append(loc, pa.table({"x": [2]}))
    tables.append(loc, pa.table({"x": [3]}), read_version=read)
    assert tables.commit_files(loc, mine, pa.schema([("x", pa.int64())]), read_version=read) == 4
    assert sorted(tables.open_dataset(loc).to_table()["x"].to_pylist()) == [1, 2, 3, 9]
