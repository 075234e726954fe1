"""Group commit on a bucket (moto S3 over HTTP): the requests one log costs, its commit included,
and the recovery of pending files a writer that is gone left in the bucket."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import artstore as art
from artstore.log import (
    fold,
    idle_fold,
    inline_upkeep,
    pending_deletes,
    pending_recovery,
    registry,
    run_committer,
    run_stats,
    upkeep,
)
from artstore.storage import Location, datasets, files, keys, pending, scans
from tests.conftest import tool_call_trajectory

pytestmark = pytest.mark.s3


def _group(step: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(j / 4, step * 100 + j) for j in range(4)])


def _model(uri: str, opts: dict) -> art.Model:
    return art.Model(name="m", project="p", base_path=uri, storage_options=opts, report_metrics=[], commit="group")


def test_a_group_log_on_a_bucket_makes_six_requests_its_commit_included(faulty_s3, monkeypatch):
    # no upkeep falls due meanwhile: what is counted is the log and its commit only
    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10_000)
    monkeypatch.setattr(fold, "FOLD_EVERY", 10_000)
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 3_600.0)
    monkeypatch.setattr(idle_fold, "FOLD_IDLE_S", 3_600.0)
    model = _model(faulty_s3.uri, faulty_s3.storage_options)
    for step in range(2):
        model.log_sync([_group(step)], split="train", step=step)
    model.flush()
    proxy = faulty_s3.proxy
    for step in range(2, 5):
        proxy.seen = seen = []
        model.log_sync([_group(step)], split="train", step=step)
        model.flush()
        proxy.seen = None
        # the id look-up (a LIST), the pending file (a PUT), the row's data file, Lance's check
        # of commits since (a LIST), its transaction and manifest; the pending file's delete
        # waits for 15 others' (`pending_deletes`)
        assert len(seen) <= 6, seen
        assert not any(method == "HEAD" for method, _ in seen), seen
    assert model.history()["step"].to_pylist() == [0, 1, 2, 3, 4]


def _deletes(seen: list[tuple[str, str]]) -> list[str]:
    return [path for method, path in seen if method == "DELETE" or (method == "POST" and "delete" in path)]


def test_committed_pending_files_on_a_bucket_go_sixteen_to_a_request(faulty_s3, monkeypatch):
    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10_000)  # only the logs' own requests
    monkeypatch.setattr(fold, "FOLD_EVERY", 10_000)
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 3_600.0)
    monkeypatch.setattr(idle_fold, "FOLD_IDLE_S", 3_600.0)
    monkeypatch.setattr(pending_deletes, "AFTER_S", 3_600.0)  # by count only here
    model = _model(faulty_s3.uri, faulty_s3.storage_options)
    run = model.run.location
    proxy = faulty_s3.proxy
    proxy.seen = seen = []
    for step in range(20):
        model.log_sync([_group(step)], split="train", step=step)
        model.flush()  # one commit per log: each leaves one pending file done
    proxy.seen = None
    assert len(_deletes(seen)) == 1, _deletes(seen)  # the first 16 files, in one request
    waiting = pending.names(run)
    assert len(waiting) == 4 and all(pending_deletes.waiting(run, n) for n in waiting)
    # this process's recovery takes them for its own (committed), not for a writer that is gone
    monkeypatch.setattr(pending_recovery, "STALE_S", 0.0)
    monkeypatch.setattr(pending_recovery, "_CHECKED", {})
    assert sorted(model.run.logs()["step"].to_pylist()) == list(range(20))
    assert scans.count_rows(run.child("logs.lance")) == 20  # none committed again
    assert pending.names(run) == waiting
    proxy.seen = seen = []
    model.run.wait_for_upkeep(60)
    proxy.seen = None
    assert len(_deletes(seen)) == 1 and pending.names(run) == []


def test_pending_files_left_in_a_bucket_are_committed_once_by_the_next_open(s3_bucket, monkeypatch):
    uri, opts = s3_bucket.uri, s3_bucket.storage_options
    model = _model(uri, opts)
    for step in range(2):
        model.log_sync([_group(step)], split="train", step=step)
    model.run.wait_for_upkeep(60)  # committed, and this writer's own pending files deleted
    run = model.run.location
    assert pending.names(run) == []
    logs = run.child("logs.lance")
    rows = scans.scan(logs)
    schema = rows.schema
    # a committer on another host killed after its commit, before deleting its pending file
    done = rows.filter(pc.equal(rows["step"], 1)).to_pylist()[0]
    pending.write(run, f"otherhost-7-{done['write_id']}.arrow", pa.Table.from_pylist([done], schema))
    # and one killed before its commit
    lost = dict(done, log_id="lost", write_id="w" * 32, step=9, commit_seq=None)
    pending.write(run, f"otherhost-7-{'w' * 32}.arrow", pa.Table.from_pylist([lost], schema))
    assert len(pending.names(run)) == 2
    # another host's file is abandoned once older than STALE_S; a fresh process looks at its first open
    monkeypatch.setattr(pending_recovery, "STALE_S", 0.0)
    monkeypatch.setattr(pending_recovery, "_CHECKED", {})
    fresh = art.open_store(uri, opts).run("p", "m")
    assert sorted(fresh.logs()["step"].to_pylist()) == [0, 1, 9]
    assert pending.names(run) == []  # both deleted, the committed one without being committed again
    assert scans.count_rows(logs) == 3
    assert fresh.trajectories().num_rows == 12
    assert keys.SEQ in scans.scan(logs).column_names
    # deleting pending files already gone is fine (a recovery beside us took them)
    pending.delete(run, [f"otherhost-7-{'w' * 32}.arrow", "otherhost-7-x.arrow"])
    assert pending.names(run) == []


def test_a_group_commit_lands_on_top_of_a_commit_made_after_its_look_up(s3_bucket, monkeypatch):
    uri, opts = s3_bucket.uri, s3_bucket.storage_options
    model = _model(uri, opts)
    model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    # the committer waits until the flush, its held version getting old (3 s: the other writer's
    # first log on the bucket could take longer under load, and the commits came in the wrong order)
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    model.log_sync([_group(2)], split="train", step=2)
    # another writer commits after our look-up, before our group commit (made on the version held)
    other = art.Model(name="m", project="p", base_path=uri, storage_options=opts, report_metrics=[], commit="sync")
    other.log_sync([_group(1)], split="train", step=1)
    model.flush()
    run = Location.parse(uri, opts).child("p", "models", "m")
    fresh = art.open_store(uri, opts).run("p", "m")
    assert sorted(fresh.logs()["step"].to_pylist()) == [0, 1, 2]
    assert fresh.trajectories().num_rows == 12
    model.run.wait_for_upkeep(60)  # a bucket deletes committed pending files in batches (pending_deletes)
    assert pending.names(run) == []


def test_a_bucket_runs_stats_refresh_waits_longer_than_a_local_runs(s3_bucket, monkeypatch):
    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 1.0)  # a bucket: BUCKET_STATS_FACTOR (6) s
    uri, opts = s3_bucket.uri, s3_bucket.storage_options
    model = art.Model(name="m", project="p", base_path=uri, storage_options=opts, report_metrics=[])
    model.log_sync([_group(0)], split="train", step=0)
    loc = registry.location(art.open_store(uri, opts).location)
    registered = datasets.latest_version(loc)
    time.sleep(2.5)  # past a local run's delay, well before a bucket run's
    assert datasets.latest_version(loc) == registered
    assert upkeep.wait(timeout=60)  # made due now
    assert datasets.latest_version(loc) == registered + 1


def test_a_bucket_folder_is_listed_with_one_request_per_page(faulty_s3, monkeypatch):
    loc = Location.parse(faulty_s3.uri, faulty_s3.storage_options).child("folder")
    for name in ["a", "b/c", "d/e/f", "g", "h"]:
        files.put_bytes(loc.child(name), b"1")
    files.put_bytes(loc.child(".i" + files.TMP_MARK + "x"), b"1")  # a write under way: not listed
    monkeypatch.setattr(files, "_S3_PAGE", 2)
    proxy = faulty_s3.proxy
    before = proxy.requests
    assert files.list_dir(loc) == ["a", "b", "d", "g", "h"]
    assert proxy.requests - before == 3  # 6 entries, 2 a page
    before = proxy.requests
    assert files.list_dir(loc.child("missing")) == []
    assert proxy.requests - before == 1


def _fragment_rows(loc: Location) -> list[int]:
    return [f.physical_rows for f in datasets.open_dataset(loc).get_fragments()]


def test_a_batch_of_logs_on_a_bucket_is_one_fragment_and_each_log_reads_as_itself(s3_bucket, monkeypatch):
    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10_000)  # no compaction: the fragments as committed
    uri, opts = s3_bucket.uri, s3_bucket.storage_options
    model = _model(uri, opts)
    model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)  # the next five wait for the flush: one commit
    groups = {step: [art.TrajectoryGroup([tool_call_trajectory(step + j / 8, step * 100 + j) for j in range(step)])]
              for step in range(1, 6)}  # step s: s trajectories, told apart by reward and id
    for step, g in groups.items():
        model.log_sync(g, split="train", step=step)
    model.flush()
    logs = model.run.table_location("logs")
    assert _fragment_rows(logs) == [1, 5]
    placed = datasets.open_dataset(logs).to_table(columns=["step"], with_row_address=True)
    batch = [(a >> 32, a & 0xFFFFFFFF) for s, a in zip(placed["step"].to_pylist(), placed["_rowaddr"].to_pylist(),
                                                        strict=True) if s > 0]
    assert batch == [(batch[0][0], offset) for offset in range(5)]  # one fragment, in log order
    fresh = art.open_store(uri, opts).run("p", "m")
    for run in (model.run, fresh):  # the writer (its notes of the batch) and a fresh reader
        assert run.history()["step"].to_pylist() == list(range(6))
        assert run.logs()["step"].to_pylist() == list(range(6))
        for step, g in groups.items():
            assert run.groups(step=step) == g, step
    model.run.wait_for_upkeep(60)  # while the server runs


def test_pending_files_of_a_writer_gone_on_a_bucket_are_committed_as_one_fragment(s3_bucket, monkeypatch):
    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10_000)
    uri, opts = s3_bucket.uri, s3_bucket.storage_options
    model = _model(uri, opts)
    model.log_sync([_group(0)], split="train", step=0)
    model.run.wait_for_upkeep(60)
    run = model.run.location
    logs = run.child("logs.lance")
    first = scans.scan(logs).to_pylist()[0]
    schema = scans.scan(logs).schema
    for step in (1, 2, 3):  # three logs of a writer on another host killed before its commit
        row = dict(first, log_id=f"lost-{step}", write_id=f"{step}" * 32, step=step, commit_seq=None)
        pending.write(run, f"otherhost-7-{row['write_id']}.arrow", pa.Table.from_pylist([row], schema))
    monkeypatch.setattr(pending_recovery, "STALE_S", 0.0)
    monkeypatch.setattr(pending_recovery, "_CHECKED", {})
    fresh = art.open_store(uri, opts).run("p", "m")
    assert sorted(fresh.logs()["step"].to_pylist()) == [0, 1, 2, 3]
    assert _fragment_rows(logs) == [1, 3]
    assert fresh.trajectories().num_rows == 16
    assert sorted(art.open_store(uri, opts).run("p", "m").logs()["log_id"].to_pylist()[1:]) == \
        ["lost-1", "lost-2", "lost-3"]
    assert pending.names(run) == []
    fresh.wait_for_upkeep(60)  # while the server runs
