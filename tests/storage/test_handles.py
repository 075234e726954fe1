"""A writer's handles on the latest version (`artstore.storage.handles` through
`datasets.open_latest`): reused while nothing changed, moved on by any other writer's commit, never
stale after a dataset is deleted and made again; on S3 one small log makes a few requests, the
same number after many logs; look-ups find ids committed by other processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import lance
import pyarrow as pa
import pytest

import artstore as art
from artstore.log import commit, group_commit, upkeep
from artstore.storage import Location, datasets, writes

ROOT = Path(__file__).resolve().parents[2]


def _rows(*keys: str) -> pa.Table:
    return pa.table({"key": list(keys)})


def _keys(ds) -> list[str]:
    return sorted(ds.to_table(columns=["key"])["key"].to_pylist())


def test_open_latest_reuses_its_handle_until_another_writer_commits(tmp_path):
    loc = Location.parse(str(tmp_path / "t.lance"))
    writes.append(loc, _rows("a"))
    writes.append(loc, _rows("b"))
    first = datasets.open_latest(loc)
    assert datasets.open_latest(loc) is first  # nothing newer: the same snapshot, no open
    # a commit that never went through this process's handles (another process, say)
    lance.write_dataset(_rows("c", "d"), loc.uri, mode="append")
    lance.write_dataset(_rows("e"), loc.uri, mode="append")
    moved = datasets.open_latest(loc)
    assert moved.version == first.version + 2 == lance.dataset(loc.uri).version
    assert _keys(moved) == ["a", "b", "c", "d", "e"]


def test_open_latest_is_never_stale_after_the_dataset_is_deleted_and_made_again(tmp_path):
    loc = Location.parse(str(tmp_path / "t.lance"))
    for key in "abc":
        writes.append(loc, _rows(key))
    assert datasets.open_latest(loc).version == 3
    shutil.rmtree(loc.uri)
    lance.write_dataset(_rows("new"), loc.uri)  # version 1 of another dataset at the same place
    again = datasets.open_latest(loc)
    assert again.version == 1 and _keys(again) == ["new"]
    writes.append(loc, _rows("next"), read_version=again.version)  # commits through the fresh handle
    assert _keys(lance.dataset(loc.uri)) == ["new", "next"]


def test_a_write_goes_through_the_held_handle_without_counting_its_rows(tmp_path, monkeypatch):
    loc = Location.parse(str(tmp_path / "t.lance"))
    writes.append(loc, _rows("a", "b"))
    held = datasets.open_latest(loc)
    written_to = []
    real = writes.write_fragments
    monkeypatch.setattr(writes, "write_fragments", lambda data, target, **kw: written_to.append(target)
                        or real(data, target, **kw))

    def no_count(self, *args, **kwargs):
        raise AssertionError("a write counted the held dataset's rows")
    monkeypatch.setattr(lance.LanceDataset, "count_rows", no_count)  # `bool(ds)` calls it through __len__
    fragments = writes.write_files(loc, _rows("c"))
    assert written_to == [held]
    monkeypatch.undo()
    writes.commit_files(loc, fragments, _rows().schema, read_version=held.version)
    assert _keys(lance.dataset(loc.uri)) == ["a", "b", "c"]


def test_a_log_id_committed_by_another_process_is_found_by_this_ones_look_up(tmp_path):
    """The look-up skips only the fragments this process committed itself: a retry of a log that
    another process stored stores nothing here."""
    base = tmp_path / "store"
    model = art.Model(name="m", project="p", base_path=str(base), report_metrics=[])
    model.log_sync(metrics={"x": 1.0}, split="train", step=1, log_id="mine")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import artstore as art
        m = art.Model(name="m", project="p", base_path={str(base)!r}, report_metrics=[])
        m.log_sync(metrics={{"x": 2.0}}, split="train", step=2, log_id="theirs")
        m.run.wait_for_upkeep(60)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    again = model.log_sync(metrics={"x": 3.0}, split="train", step=3, log_id="theirs")
    assert again is not None and not again.created and again.step == 2
    model.run.wait_for_upkeep(60)
    assert model.run.logs().num_rows == 2


@pytest.mark.s3
@pytest.mark.parametrize(("mode", "requests"), [("sync", 5), ("group", 6)])
def test_a_small_log_on_s3_makes_the_same_few_requests_after_many_logs(faulty_s3, mode, requests):
    """One LIST of one key finds the latest version (Lance's own open lists every manifest, 1,000
    per request); the data file, the transaction and the manifest are one PUT each. A group
    commit adds its pending file's PUT, and its DELETE goes with 15 others' (`pending_deletes`):
    the median log makes one more request than a sync log (the issue's bound is 8)."""
    run = Location(faulty_s3.uri, faulty_s3.storage_options).child("p", "models", "m")
    group = art.TrajectoryGroup([art.Trajectory(messages_and_choices=[{"role": "user", "content": f"q{i}"}],
                                                reward=i / 8) for i in range(8)])
    counts = []
    for step in range(1, 41):
        upkeep.wait(run, 120)
        before = faulty_s3.proxy.requests
        commit.write_log(run, group, split="train", step=step, commit_mode=mode)
        group_commit.flush(run)  # group mode: the log's commit (on the committer thread) counts too
        counts.append(faulty_s3.proxy.requests - before)
    early, late = sorted(counts[8:16])[4], sorted(counts[32:40])[4]  # medians, past the first logs
    assert early == requests and late == early, counts
