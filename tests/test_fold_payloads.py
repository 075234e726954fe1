"""Once folded into every data table, a log's payloads leave the journal at once
(`fold.drop_payloads`), and every read gives what it gave before."""

from __future__ import annotations

import pyarrow.compute as pc

import artstore as art
from artstore.log import fold, journal
from artstore.storage import scans


def _payloads(run: art.Run) -> int:
    """Payload cells (trajectories, groups) the journal still holds."""
    rows = scans.scan(run.table_location("logs"), columns=list(journal.IPC_COLUMN.values()))
    return sum(rows.num_rows - pc.sum(pc.is_null(rows[c])).as_py() for c in journal.IPC_COLUMN.values())


def test_folded_payloads_are_dropped_and_reads_do_not_change(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step in range(5):
        model.log_sync(art.TrajectoryGroup([make_trajectory(step / 10, step)]), split="train", step=step,
                       log_id=f"l{step}")
        model.flush()  # a version per log (group commit would batch them), for as_of below
    run = model.run
    run.wait_for_upkeep()
    before = (run.trajectories(), run.groups(), run.history())
    version = run.versions()[2]["version"]
    old = run.trajectories(as_of=version)
    assert _payloads(run) > 0
    fold.fold(run.location)
    assert fold.drop_payloads(run.location) > 0
    assert _payloads(run) == 0
    assert fold.drop_payloads(run.location) == 0  # nothing left to drop
    assert (run.trajectories(), run.groups(), run.history()) == before
    assert run.trajectories(as_of=version) == old
    model.log_sync(art.TrajectoryGroup([make_trajectory(0.9, 9)]), split="train", step=9, log_id="l9")
    assert fold.drop_payloads(run.location) == 0  # not folded yet: its payload stays
    assert _payloads(run) == 2  # its trajectories and its groups
    assert run.trajectories().num_rows == 6
