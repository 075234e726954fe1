"""Invariant 4: small appends don't degrade the store. Nobody compacts by hand: the maintenance
inside `log()` keeps fragments and `_versions/` bounded, keeps tagged versions, and keeps a read
of one step close to a freshly compacted copy. Invariant 3: versions inside the retention window
stay readable after maintenance. (benchmarks/small_appends.py prints the same figures.)"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import artstore as art
from artstore.log import fold, inline_upkeep
from artstore.storage import compaction, datasets, fragments, scans, writes
from benchmarks.small_appends import compacted_copy, fill, log_groups, report

LOGS, PER_LOG = 2000, 8
MAX_FRAGMENTS = compaction.COMPACT_AFTER_FRAGMENTS + inline_upkeep.MAINTAIN_EVERY  # 12: no data table is ever this far behind
# Without cleanup: one per version, 2,000+ per table. With retention 0 a journal's cleanup is due every
# CLEANUP_AFTER_VERSIONS versions, and its journal lane waits behind no fold, stats refresh or other
# run (behind one thread for all it lagged up to ~170 logs in CI: a stale refresh of an earlier
# test's run on a deleted bucket held it 8-10 s; 334 manifests after test_object_storage and
# test_secrets). Measured at most 23-29 here, alone and after those.
MAX_MANIFESTS = 64
MAX_VERSIONS_BYTES = 1 << 20     # without cleanup: ~20 KB per logs manifest x 2,000 versions = ~40 MB


@pytest.mark.slow
@pytest.mark.parametrize("commit", ["sync", "group"])
def test_2000_small_logs_keep_fragments_and_versions_bounded_and_tags_and_steps_readable(tmp_path, commit):
    # the journal's fragment bound is the same in both modes: a sync log that finds the journal
    # crowded waits for (or does) its compaction; a group commit that would crowd it does so before
    # its batch, and cuts the batch to what fits (`inline_upkeep.room`)
    model = art.Model(name="small", project="appends", base_path=str(tmp_path / "live"), report_metrics=[],
                      retention=timedelta(0), commit=commit)
    t0 = time.perf_counter()
    f = fill(model, LOGS, PER_LOG, tag_at=10)
    print(f"\n{LOGS} logs of {PER_LOG} trajectories in {time.perf_counter() - t0:.0f} s")
    run = model.run
    report(f, LOGS, run)

    assert run.logs().num_rows == LOGS and run.trajectories().num_rows == LOGS * PER_LOG
    for table, worst in f.worst.items():
        # the journal's writers compact it themselves only once its background compaction lags far behind
        assert worst["fragments"] <= (inline_upkeep.MAX_FRAGMENTS + inline_upkeep.MAINTAIN_EVERY if table == "logs" else MAX_FRAGMENTS), table
        assert worst["manifests"] <= MAX_MANIFESTS, table
        assert worst["versions_bytes"] <= MAX_VERSIONS_BYTES, table
    # a sync log is one version of logs (the journal), a group commit one per batch; the fold adds a
    # few versions per 16 logs per table: cleanup removed more versions than the logs (sync) or the
    # group commits made
    made = run.versions()[-1]["version"]  # the journal's versions (2,173 sync, 455 group here)
    assert sum(r["removed_versions"] for _, _, r in f.maintenance) > (LOGS if commit == "sync" else made), "cleanup ran"

    # The version tagged after 10 logs survived every cleanup, and reads as it was.
    assert run.groups(as_of="early") == [log_groups(i, PER_LOG) for i in range(10)]
    assert run.history(as_of="early").num_rows == 10
    versions = run.versions()
    assert [v["version"] for v in versions if v["tags"] == ["early"]] == [run.tags()["early"]]
    assert len(datasets.versions(run.table_location("logs"))) <= MAX_MANIFESTS  # the physical ones
    assert [v["version"] for v in versions] == list(range(1, versions[-1]["version"] + 1))  # all: the map
    assert run.logs(as_of=versions[-1]["version"]).num_rows == LOGS

    # How fast those reads are, live against a compacted copy, is benchmarks/small_appends.py's to
    # measure (0.8-1.8x; a timed bound here failed on a loaded CI-like run at 3.03x): here, each
    # step read returns what was logged, live and from the copy.
    compacted = compacted_copy(run, str(tmp_path / "compacted"))
    for step in [*range(0, LOGS, LOGS // 10), 1234, LOGS - 1]:
        assert run.groups(step=step) == compacted.groups(step=step) == [log_groups(step, PER_LOG)], step


def test_versions_inside_the_retention_window_stay_readable_after_maintenance(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[],
                      retention=timedelta(hours=1))
    pinned = {}
    for i in range(40):  # enough for several compactions and cleanups of every table
        model.log_sync(art.TrajectoryGroup([make_trajectory(i / 40, i)]), step=i, log_id=f"l{i}")
        pinned[i] = model.run.versions()[-1]["version"]
    compacted = model.run.compact()  # every table to one fragment, then cleanup outside the window
    assert {t: r["fragments"] for t, r in compacted.items()} == dict.fromkeys(compacted, 1)
    for i in (0, 5, 17, 39):
        assert model.run.trajectories(as_of=pinned[i])["log_id"].to_pylist() == [f"l{k}" for k in range(i + 1)]


def test_compaction_waits_for_enough_small_fragments_then_picks_the_smallest_sufficient_tier():
    top = 16_384
    assert compaction.tiers(top, 8) == [128, 2048, top]
    assert compaction.compaction_target([8] * 7, top) is None
    assert compaction.compaction_target([top] * 20 + [8] * 7, top) is None  # full fragments don't count
    assert compaction.compaction_target([8] * 8, top) == 128
    # merging only the four 8-row appends would leave 7 small fragments: the next tier merges the 128s too
    assert compaction.compaction_target([2048, 2048, 128, 128, 128, 128, 8, 8, 8, 8], top) == 2048


@pytest.mark.parametrize(("rows", "target"), [
    ([8] * 10, 128), ([100, 8, 8, 8, 300, 8, 8], 64), ([2048, 2048, 128, 128, 128, 128, 8, 8, 8, 8], 2048),
    ([1] * 40, 16), ([500, 3, 3, 500, 3], 1000), ([5, 9, 2, 30, 1, 1, 7], 10), ([3] * 17, 8),
])
def test_the_planner_model_matches_lance(tmp_path, rows, target):
    """`after_compaction` (with which maintenance picks a tier) predicts the fragments Lance's
    compaction leaves, in order: rewritten ones go after the others (so no reader may trust the
    order of rows in a dataset)."""
    import lance
    import pyarrow as pa

    uri, start = str(tmp_path / "t.lance"), 0
    for n in rows:
        lance.write_dataset(pa.table({"x": pa.array(range(start, start + n), pa.int64())}), uri,
                            mode="append" if start else "create")
        start += n
    ds = lance.dataset(uri)
    ds.optimize.compact_files(target_rows_per_fragment=target)
    after = lance.dataset(uri)
    assert [f.physical_rows for f in after.get_fragments()] == compaction.after_compaction(rows, target)
    assert sorted(after.to_table()["x"].to_pylist()) == list(range(start))


def test_reads_keep_the_logged_order_when_compaction_moves_fragments(tmp_path, make_trajectory):
    """Lance puts the fragments a compaction writes after all others; with concurrent writers a
    compaction need not be of the newest fragments, so the rows' order in a dataset is not the
    order of the logs. Reads must not depend on it."""
    import lance

    # sync: one fragment per log, so the compactions below can take the logs apart
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="sync")
    groups = [art.TrajectoryGroup([make_trajectory(i / 10, i)] * (1 + i % 3)) for i in range(8)]
    for i, g in enumerate(groups):
        model.log_sync(g, split="val", step=i // 2, log_id=f"log-{i}")
        if i == 6:  # log-2..log-6 into one fragment, then log-0..log-1 into one after it
            fold.fold(model.run.location)  # the journaled logs' rows into the data tables
            for t in ("logs", "trajectories", "metrics", "groups"):
                uri = model.run.table_location(t).uri
                for keep in (slice(0, 2), slice(2, None)):  # the first two, then the merged rest
                    ids = [f.fragment_id for f in lance.dataset(uri).get_fragments()]
                    lance.dataset(uri).optimize.compact_files(target_rows_per_fragment=10**6,
                                                              excluded_fragment_ids=ids[keep])
    physical = scans.scan(model.run.table_location("logs"), columns=["log_id"])["log_id"].to_pylist()
    assert physical != sorted(physical, key=lambda x: int(x.split("-")[1]))  # the dataset's order moved
    order = [f"log-{i}" for i in range(8)]
    assert model.run.logs()["log_id"].to_pylist() == order
    assert model.history()["step"].to_pylist() == [i // 2 for i in range(8)]
    assert model.run.groups() == groups
    assert model.run.trajectories()["log_id"].to_pylist() == [f"log-{i}" for i in range(8) for _ in range(1 + i % 3)]
    assert list(dict.fromkeys(model.run.metrics()["log_id"].to_pylist())) == order


def test_concurrent_forced_compactions_retry_lost_races_and_all_finish(tmp_path, make_trajectory, monkeypatch):
    import threading

    import pyarrow as pa

    from artstore.log import journal
    from artstore.schema import arrow_schema

    monkeypatch.setattr(inline_upkeep, "MAINTAIN_EVERY", 10**9)  # leave every small fragment to the compactions
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    old = pa.schema([f for f in arrow_schema("logs") if f.name not in journal.PAYLOAD_COLUMNS])
    writes.create(model.run.table_location("logs"), old.empty_table())  # one commit per table and log
    run = art.open_store(tmp_path).run("p", "m")
    for table in ("trajectories", "logs"):  # Lance's compaction, and the order-keeping rewrite
        for trial in range(2):
            for i in range(6):
                model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, i)])], split="train", step=10 * trial + i)
            fold.fold(run.location)  # the journaled logs' rows into the data tables
            start, errors = threading.Barrier(3), []

            def compact(table=table, start=start, errors=errors):
                start.wait()
                try:
                    compaction.maintain(run.table_location(table), table, timedelta(days=7), force=True)
                except art.ArtstoreError as e:  # before: "too many concurrent commits" (Rewrite preempted)
                    errors.append(e)

            threads = [threading.Thread(target=compact) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == [], (table, trial)
    assert run.trajectories().num_rows == run.logs().num_rows == 12
    assert fragments.fragment_count(run.table_location("trajectories")) == 1
