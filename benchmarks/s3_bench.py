"""Log and read latency of one store on S3 (a local moto server) against local disk.

    python -m benchmarks.s3_bench [--logs 20] [--trajectories 512] [--reads 10]

Starts moto on 127.0.0.1 (the test suite's server), then for each target logs ``--logs`` train
steps of ``--trajectories`` synthetic tool-call rollouts (groups of 16) through
``Model.log_sync``, and reads steps back (``Run.trajectories(step=)``, ``Run.groups(step=)``,
``Run.history()``) ``--reads`` times. Prints medians (and p90) side by side with the S3/local
ratio. moto runs in Python on the same cores and has no network latency: the S3 column measures
artstore's request pattern against a slow-ish server, not AWS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCE_LOG", "error")

import artstore as art  # noqa: E402
from benchmarks.synthetic import count_trajectories, make_step  # noqa: E402
from tests.servers.moto_s3 import MotoS3Server  # noqa: E402

GROUP_SIZE = 16


def build_groups(groups: list[dict[str, Any]]) -> list[art.TrajectoryGroup]:
    return [art.TrajectoryGroup([art.Trajectory(**t) for t in g["trajectories"]], metadata=g["metadata"],
                                metrics=g["metrics"], logs=g["logs"]) for g in groups]


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_target(uri: str, options: dict[str, str] | None, steps: list[list[art.TrajectoryGroup]],
               reads: int) -> dict[str, list[float]]:
    model = art.Model(name="bench", project="s3-bench", base_path=uri, storage_options=options, report_metrics=[])
    times: dict[str, list[float]] = {"log": [], "read trajectories(step)": [], "read groups(step)": [],
                                     "read history()": []}
    for step, groups in enumerate(steps):
        times["log"].append(_timed(lambda g=groups, s=step: model.log_sync(g, split="train", step=s)))
    run = art.open_store(uri, options).run("s3-bench", "bench")
    n = sum(len(g.trajectories) for g in steps[0])
    for i in range(reads):
        step = (i * 7) % len(steps)
        got = run.trajectories(step=step)
        assert got.num_rows == n, (got.num_rows, n)
        times["read trajectories(step)"].append(_timed(lambda s=step: run.trajectories(step=s)))
        times["read groups(step)"].append(_timed(lambda s=step: run.groups(step=s)))
        times["read history()"].append(_timed(run.history))
    return times


def _p90(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=int, default=20, help="log calls (train steps) per target")
    parser.add_argument("--trajectories", type=int, default=512, help="trajectories per log call")
    parser.add_argument("--reads", type=int, default=10, help="reads of each kind per target")
    args = parser.parse_args()

    steps = [build_groups(make_step(s, args.trajectories // GROUP_SIZE, GROUP_SIZE, seed=0)) for s in range(args.logs)]
    per_log = count_trajectories([{"trajectories": g.trajectories} for g in steps[0]])
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp:
        server = MotoS3Server(Path(tmp))
        server.start()
        try:
            bucket = server.create_bucket()
            # artstore's default retries/timeouts; only what reaching moto needs
            options = {"aws_endpoint": bucket.endpoint, "aws_access_key_id": bucket.access_key_id,
                       "aws_secret_access_key": bucket.secret_access_key, "aws_region": bucket.region}
            local = run_target(str(Path(tmp) / "store"), None, steps, args.reads)
            s3 = run_target(bucket.uri, options, steps, args.reads)
        finally:
            server.stop()

    print(f"{args.logs} logs of {per_log} trajectories each; {args.reads} reads of each kind; seconds")
    print(f"{'operation':<26}{'local median':>14}{'s3 median':>12}{'ratio':>8}{'local p90':>12}{'s3 p90':>10}")
    for name in local:
        lm, sm = statistics.median(local[name]), statistics.median(s3[name])
        print(f"{name:<26}{lm:>14.3f}{sm:>12.3f}{sm / lm:>7.1f}x{_p90(local[name]):>12.3f}{_p90(s3[name]):>10.3f}")


if __name__ == "__main__":
    main()
