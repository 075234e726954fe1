"""The first read right after a run's logs, in one process, as the run grows: how long it waits
for this process's queued logs to land (group commit, the default) and how long the read takes.

    LANCE_LOG=error python -m benchmarks.first_read [--steps 3000] [--checkpoints 100,1000,2000,3000]

Each step logs a train and a val log of 1 group of 8 trajectories (as `benchmarks.growth`), back
to back. At each checkpoint, right after the step's logs: `group_commit.flush` of the run (the
wait every read's barrier makes, timed apart), then `history()` and the step's train groups, five
times; it prints the wait, the first read and the median of the rest (ms). The background upkeep
(fold, compaction, cleanup) runs as it would. The machine is shared: one sample per checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from datetime import timedelta

import artstore
from artstore.log import group_commit
from benchmarks.read_after_log import _groups


async def _run(steps: int, checkpoints: list[int]) -> None:
    base = tempfile.mkdtemp(prefix="firstread-")
    try:
        model = artstore.TrainableModel(name="a", project="p", base_model="x", base_path=base, report_metrics=[],
                                        reader_window=timedelta(seconds=0.5))
        train, val = _groups(1, 3), _groups(1, 4)
        for step in range(1, steps + 1):
            await model.log(train, split="train", step=step)
            await model.log(val, split="val", step=step)
            if step not in checkpoints:
                continue
            t = time.perf_counter()
            group_commit.flush(model.run.location)
            wait = 1000 * (time.perf_counter() - t)
            reads = []
            for _ in range(5):
                model.run.history()
                t = time.perf_counter()
                model.run.groups(split="train", step=step)
                reads.append(1000 * (time.perf_counter() - t))
            print(f"step {step}: wait for the queued logs {wait:.1f} ms, first read {reads[0]:.1f} ms, "
                  f"median of the next 4 {statistics.median(reads[1:]):.1f} ms", flush=True)
        model.flush()
        model.run.wait_for_upkeep()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--checkpoints", default="100,1000,2000,3000")
    a = p.parse_args()
    asyncio.run(_run(a.steps, [int(c) for c in a.checkpoints.split(",")]))


if __name__ == "__main__":
    main()
