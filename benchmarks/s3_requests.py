"""S3 requests per small log, and per read, as a run grows: moto behind the fault proxy
(tests/servers/fault_proxy.py) with a delay per request that mimics a real bucket.

    LANCE_LOG=error python -m benchmarks.s3_requests [--steps 300] [--checkpoints 100,300]
        [--delay-ms 20] [--window 10]

Each step logs a small train step and a val eval (1 group of 8 each). At each checkpoint it
reports, over the last ``--window`` steps, the median number of HTTP requests and the median
latency of one small log, then the requests and latency of ``Run.history()`` and of reading one
step (``Run.groups(split=, step=)``), each right after the logs and once more (nothing logged in
between: a reader that keeps the run's latest logs in memory only checks the version). Requests
are counted at the proxy: Lance's and fsspec's together. Background upkeep (fold, compaction,
cleanup) is waited for before each counted log, so a log's count is its own; the upkeep's
requests are reported per checkpoint apart.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")

import artstore as art  # noqa: E402
from benchmarks.log_hot_path import tool_call_trajectory  # noqa: E402
from tests.servers.fault_proxy import FaultProxy  # noqa: E402
from tests.servers.moto_s3 import MotoS3Server  # noqa: E402


def _group(step: int, seed: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(step, step * 16 + seed * 8 + j) for j in range(8)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoints", default="100,300")
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--window", type=int, default=10)
    a = p.parse_args()
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    with tempfile.TemporaryDirectory(prefix="s3-requests-") as tmp:
        server = MotoS3Server(Path(tmp))
        server.start()
        proxy = FaultProxy(server.endpoint).start()
        try:
            bucket = server.create_bucket()
            options = {"aws_endpoint": proxy.endpoint, "aws_access_key_id": bucket.access_key_id,
                       "aws_secret_access_key": bucket.secret_access_key, "aws_region": bucket.region,
                       "allow_http": "true"}
            model = art.Model(name="m", project="p", base_path=bucket.uri, storage_options=options,
                              report_metrics=[])
            counts: list[tuple[int, int, float]] = []
            print(f"moto behind the fault proxy, {a.delay_ms:.0f} ms per request; steps of 8 train + 8 val")
            print("| at step | requests per small log (median) | small log (ms) | upkeep requests since last "
                  "| history(): requests / ms | read a step: requests / ms | history() again | read a step again |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            upkeep_requests = 0
            for step in range(1, a.steps + 1):
                counted = any(c - a.window < step <= c for c in checkpoints)
                proxy.delay(a.delay_ms / 1000 if counted else 0.0)
                for split, seed in (("train", 0), ("val", 1)):
                    before = proxy.requests
                    model.run.wait_for_upkeep(120)
                    upkeep_requests += proxy.requests - before
                    before, t = proxy.requests, time.perf_counter()
                    model.log_sync(_group(step, seed), split=split, step=step)
                    if counted:
                        counts.append((step, proxy.requests - before, time.perf_counter() - t))
                if step in checkpoints:
                    model.run.wait_for_upkeep(120)
                    proxy.delay(a.delay_ms / 1000)
                    window = [c for c in counts if c[0] > step - a.window]
                    n = statistics.median(c[1] for c in window)
                    ms = 1000 * statistics.median(c[2] for c in window)
                    before, t = proxy.requests, time.perf_counter()
                    model.run.history()
                    h = (proxy.requests - before, 1000 * (time.perf_counter() - t))
                    before, t = proxy.requests, time.perf_counter()
                    model.run.groups(split="train", step=step)
                    r = (proxy.requests - before, 1000 * (time.perf_counter() - t))
                    again = []  # the same reads once more, nothing logged in between
                    for read in (model.run.history, functools.partial(model.run.groups, split="train", step=step)):
                        before, t = proxy.requests, time.perf_counter()
                        read()
                        again.append(f"{proxy.requests - before} / {1000 * (time.perf_counter() - t):.0f}")
                    print(f"| {step} | {n:.0f} | {ms:.0f} | {upkeep_requests} | {h[0]} / {h[1]:.0f} "
                          f"| {r[0]} / {r[1]:.0f} | {again[0]} | {again[1]} |", flush=True)
                    upkeep_requests = 0
                    proxy.delay(0.0)
        finally:
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
