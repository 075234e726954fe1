"""The scan plan: the union of every part's read is exactly Store.sql's answer, table by table,
on a store with a SIGKILLed writer's orphans, racing retries, compaction and a tag."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

import artstore as art
from tests.engines.store import TABLES, TAG, tally, truth


def _read(parts) -> pa.Table:
    return pa.concat_tables([pickle.loads(pickle.dumps(p)).read() for p in parts])


@pytest.mark.parametrize("table", TABLES)
def test_parts_read_exactly_what_sql_sees(engine_store, table):
    store = art.open_store(engine_store)
    snap = store.snapshot()
    got = tally(table, _read(snap.scan_parts(table)))
    assert got == truth(store, table)
    raw = sum(p.rows for p in snap.scan_parts(table))
    if table == "trajectories":
        assert raw > got["p/a"][0] + got["p/b"][0] + got["q/c"][0]  # the plan did hide rows


def test_orphans_sharing_fragments_are_filtered_and_others_read_unfiltered(engine_store):
    parts = art.open_store(engine_store).snapshot().scan_parts("trajectories")
    by_run = {f"{p.project}/{p.model}": p for p in parts}
    assert "NOT IN" in by_run["p/a"].filter  # compacted: the crashed and losing ids share its fragments
    assert by_run["p/b"].filter is None  # its crashed writer left only uncommitted files
    assert by_run["q/c"].filter is None


def test_as_of_a_tag_reads_the_tagged_version(engine_store):
    store = art.open_store(engine_store)
    as_of = {"q/c": TAG}
    snap = store.snapshot(as_of=as_of)
    for table in TABLES:
        assert tally(table, _read(snap.scan_parts(table))) == truth(store, table, as_of=as_of)
    assert truth(store, "logs", as_of=as_of)["q/c"][0] == 4


def test_a_compaction_after_the_snapshot_changes_nothing_read(engine_store, tmp_path):
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(engine_store, path)
    store = art.open_store(path)
    want = {t: truth(store, t) for t in TABLES}
    snap = store.snapshot()
    parts = {t: snap.scan_parts(t) for t in TABLES}
    for run in store.runs():
        run.compact()  # rewrites the fragments the parts name; the pinned version still reads
    art.Model(name="c", project="q", base_path=str(path), report_metrics=[]).log_sync(
        [art.TrajectoryGroup([art.Trajectory(messages_and_choices=[{"role": "user", "content": "late"}],
                                             reward=1.0)])], split="val", step=9)
    for t in TABLES:
        assert tally(t, _read(parts[t])) == want[t]


def test_columns_and_filter_are_pushed_into_the_part(engine_store):
    store = art.open_store(engine_store)
    parts = store.snapshot(runs=["p/a"]).scan_parts("trajectories", columns=["step", "reward"],
                                                    filter="split = 'val'")
    got = _read(parts)
    assert got.column_names == ["project", "model", "step", "reward"]
    want = store.sql("SELECT count(*) AS n, sum(reward) AS s FROM trajectories "
                     "WHERE model = 'a' AND split = 'val'").to_pylist()[0]
    assert (got.num_rows, pa.compute.sum(got["reward"]).as_py()) == (want["n"], want["s"])


def test_small_parts_cover_the_same_rows(engine_store):
    store = art.open_store(engine_store)
    from artstore.engines.plan import Snapshot

    parts = Snapshot(store, rows_per_part=1).scan_parts("trajectories")
    assert all(len(p.fragment_ids) == 1 for p in parts)  # one part per fragment
    assert len(parts) == len({(p.model, p.fragment_ids) for p in parts})
    assert tally("trajectories", _read(parts)) == truth(store, "trajectories")


def test_a_part_never_shows_its_storage_secrets(tmp_path):
    from artstore.engines.parts import ScanPart
    from artstore.storage import Location

    loc = Location.parse("s3://bucket/x/trajectories.lance", {"aws_access_key_id": "AKIAEXAMPLEKEY",
                                                             "aws_secret_access_key": "s3cr3t-value-123",
                                                             "aws_endpoint": "http://127.0.0.1:1"})
    part = ScanPart("p", "m", "trajectories", loc, 3, (0, 1), ("reward",), None, 10)
    assert "s3cr3t-value-123" not in repr(part) and "s3cr3t-value-123" not in str(part)
    back = pickle.loads(pickle.dumps(part))
    assert back.storage_options["aws_secret_access_key"] == "s3cr3t-value-123"  # a worker needs it


def test_bad_table_and_columns_say_what_exists(engine_store):
    snap = art.open_store(engine_store).snapshot()
    with pytest.raises(art.ValidationError, match="no table"):
        snap.scan_parts("nope")
    with pytest.raises(art.ValidationError, match="no columns"):
        snap.scan_parts("trajectories", columns=["rewardz"])
