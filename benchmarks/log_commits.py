"""Commits and latency of one small `Model.log()`: each step logs a train step (1 group of 8
tool-call trajectories, a judge cost added to the metrics builder first, as ART's quickstart
does) and a val eval (1 group of 8), on one Model with a config.

Reports the median latency (ms) of the train and the val logs over the steps after
``--warmup``, and, over the last ``--count`` steps, the Lance versions each log made per table of
the run (background upkeep waited for before each counted log, so only the log's own commits
count; the upkeep it asks for may still add a compaction of `logs`).

    LANCE_LOG=error python -m benchmarks.log_commits [--steps 200] [--warmup 20] [--count 20]

Run it on two commits to compare them (the machine is shared: run them back to back).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import artstore as art
from artstore.log import upkeep
from artstore.storage import Location, datasets
from benchmarks.log_hot_path import tool_call_trajectory


def _group(step: int, seed: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(step, step * 16 + seed * 8 + j) for j in range(8)])


def _versions(run_dir: Path) -> dict[str, int]:
    return {p.name: datasets.latest_version(Location.parse(str(p))) for p in sorted(run_dir.glob("*.lance"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--count", type=int, default=20)
    a = p.parse_args()
    model = art.Model(name="agent", project="bench", base_path=tempfile.mkdtemp(prefix="log-commits-"),
                      report_metrics=[], config={"lr": 1e-5, "group_size": 8})
    run_dir = Path(model.run.location.uri)
    ms: dict[str, list[float]] = {"train": [], "val": []}
    made: dict[str, Counter] = {"train": Counter(), "val": Counter()}
    for step in range(a.steps):
        counted = step >= a.steps - a.count
        for split, seed in (("train", 0), ("val", 1)):
            if split == "train":
                model.metrics_builder("train").add_cost("train/judge", 0.001)
            if counted:
                upkeep.wait()
                before = _versions(run_dir)
            t = time.perf_counter()
            model.log_sync([_group(step, seed)], split=split, step=step)
            if step >= a.warmup:
                ms[split].append(1000 * (time.perf_counter() - t))
            if counted:
                after = _versions(run_dir)
                made[split].update({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
    upkeep.wait()
    for split in ("train", "val"):
        per_log = {k: round(v / a.count, 2) for k, v in sorted(made[split].items())}
        print(f"{split}: median {statistics.median(ms[split]):.1f} ms over {len(ms[split])} logs; "
              f"versions per log {per_log}")


if __name__ == "__main__":
    main()
