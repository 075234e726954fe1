"""Invariant 4: small appends don't degrade the store, and compaction never changes what a
reader sees."""

from __future__ import annotations

import artstore as art
from artstore.storage import tables


def test_reads_keep_the_logged_order_when_compaction_moves_fragments(tmp_path, make_trajectory):
    """Lance puts the fragments a compaction writes after all others; with concurrent writers a
    compaction need not be of the newest fragments, so the rows' order in a dataset is not the
    order of the logs. Reads must not depend on it."""
    import lance

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    groups = [art.TrajectoryGroup([make_trajectory(i / 10, i)] * (1 + i % 3)) for i in range(8)]
    for i, g in enumerate(groups):
        model.log_sync(g, split="val", step=i // 2, log_id=f"log-{i}")
        if i == 6:  # log-2..log-6 into one fragment, then log-0..log-1 into one after it
            for t in ("logs", "trajectories", "metrics", "groups"):
                uri = model.run.table_location(t).uri
                for keep in (slice(0, 2), slice(2, None)):  # the first two, then the merged rest
                    ids = [f.fragment_id for f in lance.dataset(uri).get_fragments()]
                    lance.dataset(uri).optimize.compact_files(target_rows_per_fragment=10**6,
                                                              excluded_fragment_ids=ids[keep])
    physical = tables.scan(model.run.table_location("logs"), columns=["log_id"])["log_id"].to_pylist()
    assert physical != sorted(physical, key=lambda x: int(x.split("-")[1]))  # the dataset's order moved
    order = [f"log-{i}" for i in range(8)]
    assert model.run.logs()["log_id"].to_pylist() == order
    assert model.history()["step"].to_pylist() == [i // 2 for i in range(8)]
    assert model.run.groups() == groups
    assert model.run.trajectories()["log_id"].to_pylist() == [f"log-{i}" for i in range(8) for _ in range(1 + i % 3)]
    assert list(dict.fromkeys(model.run.metrics()["log_id"].to_pylist())) == order
