"""Reads right after each log: `history()` and one step's groups of the latest version (kept in
memory per process, `artstore.read.latest_logs`) beside the same reads through the full path
(`as_of=` that same version), in one process, as a run grows.

    LANCE_LOG=error python -m benchmarks.read_after_log [--steps 300] [--measure 30]

It logs `--steps` small steps (a train and a val log of 1 group of 8 trajectories each, as
`benchmarks.growth`), then `--measure` more, and after each of those reads `history()` and the
step's train groups both ways; it prints the medians (ms) and their ratio. The machine is
shared: read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import artstore
from benchmarks.driver_protocol import trajectory_fields
from benchmarks.synthetic import step_from_spec


def _groups(step: int, seed: int) -> list[artstore.TrajectoryGroup]:
    return [artstore.TrajectoryGroup([artstore.Trajectory(**trajectory_fields(t, artstore.Choice))
                                      for t in g["trajectories"]], metadata=g.get("metadata", {}))
            for g in step_from_spec(step, {"n_groups": 1, "group_size": 8, "seed": seed})]


def _timed(read) -> float:  # noqa: ANN001 - any call
    t = time.perf_counter()
    read()
    return 1000 * (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--measure", type=int, default=30)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="read-after-log-") as base:
        model = artstore.TrainableModel(name="agent", project="bench", base_model="x", base_path=base,
                                        report_metrics=[])
        run = model.run
        times: dict[str, list[float]] = {"history": [], "history full": [], "step": [], "step full": []}
        for step in range(1, a.steps + a.measure + 1):
            model.log_sync(_groups(step, 3), split="train", step=step)
            model.log_sync(_groups(step, 4), split="val", step=step)
            if step <= a.steps:
                continue
            version = run.versions()[-1]["version"]
            times["history"].append(_timed(run.history))
            times["step"].append(_timed(lambda s=step: run.groups(split="train", step=s)))
            times["history full"].append(_timed(lambda v=version: run.history(as_of=v)))
            times["step full"].append(_timed(lambda s=step, v=version: run.groups(split="train", step=s, as_of=v)))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"after {a.steps} steps, read right after each of {a.measure} more (median ms):")
        print(f"history(): latest {med['history']:.1f}, full path {med['history full']:.1f} "
              f"({med['history'] / med['history full']:.2f}x)")
        print(f"read a step (8): latest {med['step']:.1f}, full path {med['step full']:.1f} "
              f"({med['step'] / med['step full']:.2f}x)")


if __name__ == "__main__":
    main()
