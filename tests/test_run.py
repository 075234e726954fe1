"""Run's read API on edge cases: empty selections, damaged stores (issue 16)."""

from __future__ import annotations

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
