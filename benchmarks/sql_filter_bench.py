"""`Store.sql` with a filter naming project/model and stored columns (e.g. the UI's SQL box:
SELECT * ... WHERE project = ... AND model = ... AND step = ...).

Such a filter cannot go into Lance whole (the run's table has no project/model columns). The
views then read the filter's stored columns first and fetch only the matching rows whole
(`view_datasets.FETCH_AT_MOST`); the baseline, measured in the same run, reads every column of
the run and filters in Arrow (FETCH_AT_MOST = 0).

    python -m benchmarks.sql_filter_bench [--steps 200 --per-step 256] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.ui_bench import NAME, PROJECT, build

QUERIES = {
    "SELECT * one step": "SELECT * FROM trajectories WHERE project = '{p}' AND model = '{m}' AND step = {s}",
    "SELECT * one step, one split": "SELECT * FROM trajectories WHERE project = '{p}' AND model = '{m}' "
                                    "AND split = 'train' AND step = {s}",
    "count of a split (no fetch)": "SELECT count(*) FROM trajectories WHERE model = '{m}' AND split = 'train'",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--per-step", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--root", default=".bench/sql_filter")
    args = ap.parse_args()
    import artstore as art
    from artstore.read import view_datasets

    info = build(Path(args.root), args.steps, args.per_step, val_every=10)
    store = art.open_store(str(Path(args.root) / "store"))
    last = args.steps - 1
    print(f"run: {args.steps} steps x {args.per_step} train trajectories ({info})")
    print(f"{'query':34} {'fetch ms':>9} {'scan ms':>9} {'ratio':>6}")
    for label, q in QUERIES.items():
        sql = q.format(p=PROJECT, m=NAME, s=last)
        times: dict[float, list[float]] = {0.1: [], 0.0: []}
        answers = {}
        for _ in range(args.reps):
            for share in times:  # alternate, so load drifts hit both alike
                view_datasets.FETCH_AT_MOST = share
                t0 = time.perf_counter()
                answers[share] = store.sql(sql)
                times[share].append(time.perf_counter() - t0)
        assert answers[0.1].num_rows == answers[0.0].num_rows
        fetch, scan = (statistics.median(times[s]) * 1000 for s in (0.1, 0.0))
        print(f"{label:34} {fetch:9.1f} {scan:9.1f} {fetch / scan:6.2f}")


if __name__ == "__main__":
    main()
