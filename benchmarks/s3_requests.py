"""S3 requests per small log, and per read, as a run grows: moto behind the fault proxy
(tests/servers/fault_proxy.py) with a delay per request that mimics a real bucket.

    LANCE_LOG=error python -m benchmarks.s3_requests [--steps 300] [--checkpoints 100,300]
        [--delay-ms 20] [--window 10] [--commit sync|group]

Each step logs a small train step and a val eval (1 group of 8 each), one log at a time as a
training loop does (a log, then seconds of rollouts or training): after each log the benchmark
waits for its group commit (`Model.flush`; nothing to wait for in sync mode), so each group
commit holds one log, the worst case for group mode, and then for the background upkeep the log
asked for (compaction, cleanup, fold), so each phase's requests are its own. The delay applies to
every request, so the upkeep that runs on a timer (the registry's stats STATS_DELAY_S after a
log, the idle fold) runs about as often per log as against a real bucket. Every request is
counted at the proxy (Lance's and fsspec's together) and put in one of three phases by when it
was made:

- caller: while log() runs (in group mode: the id look-up and the pending file);
- commit: after log() returned, until its group commit is done (its pending file deleted);
- upkeep: the background work the log asked for, and the timers' work (stats, idle fold: it
  may land in any phase; counted in the phase it overlaps), until done at each checkpoint
  (`Run.wait_for_upkeep`).

At each checkpoint it reports the median over the last ``--window`` steps of the caller's
requests and latency of one small log, and over every log since the previous checkpoint the
requests per log of each phase and all together, with the requests per log by phase, kind
(GET / PUT / LIST / HEAD / DELETE / POST) and path under the run (e.g. ``logs.lance/_versions``).
Then the requests and latency of ``Run.history()`` and of reading one step
(``Run.groups(split=, step=)``), each right after the logs and once more (nothing logged in
between).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")

import artstore as art  # noqa: E402
from artstore.log import upkeep  # noqa: E402
from benchmarks.log_hot_path import tool_call_trajectory  # noqa: E402
from tests.servers.fault_proxy import FaultProxy  # noqa: E402
from tests.servers.moto_s3 import MotoS3Server  # noqa: E402

PHASES = ("caller", "commit", "upkeep")


def _group(step: int, seed: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(step, step * 16 + seed * 8 + j) for j in range(8)])


def kind_and_place(method: str, path: str, run_prefix: str, store_prefix: str = "") -> tuple[str, str]:
    """("GET" | "PUT" | "LIST" | ..., the path under the run cut to its first two parts for a
    table, e.g. "logs.lance/_versions", or its first part) of one path-style S3 request."""
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    key = urllib.parse.unquote(url.path).lstrip("/").partition("/")[2]  # without the bucket
    kind = method
    if method == "GET" and ("list-type" in query or not key):
        kind, key = "LIST", query.get("prefix", [""])[0]
    elif method == "POST" and "delete" in query:
        kind = "DELETE"  # a batch delete
    if key.startswith(run_prefix):
        parts = key[len(run_prefix):].split("/")
        place = "/".join(parts[:2]) if parts[0].endswith(".lance") and len(parts) > 1 else parts[0]
    else:
        place = "(store) " + "/".join(key[len(store_prefix):].split("/")[:2]) if key else "(bucket)"
    return kind, place or "(run)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoints", default="100,300")
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--commit", choices=["sync", "group"], default="sync", help="artstore's commit mode")
    a = p.parse_args()
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    with tempfile.TemporaryDirectory(prefix="s3-requests-") as tmp:
        server = MotoS3Server(Path(tmp))
        server.start()
        proxy = FaultProxy(server.endpoint).start()
        proxy.seen = seen = []
        try:
            bucket = server.create_bucket()
            store_key = urllib.parse.urlsplit(bucket.uri).path.strip("/")
            store_prefix = f"{store_key}/".lstrip("/")
            run_prefix = f"{store_prefix}p/models/m/"
            options = {"aws_endpoint": proxy.endpoint, "aws_access_key_id": bucket.access_key_id,
                       "aws_secret_access_key": bucket.secret_access_key, "aws_region": bucket.region,
                       "allow_http": "true"}
            model = art.Model(name="m", project="p", base_path=bucket.uri, storage_options=options,
                              report_metrics=[], commit=a.commit)
            window: list[tuple[int, int, float]] = []  # (step, caller's requests, seconds) of counted logs
            stretch: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (phase, kind, place)
            logs = 0
            print(f"moto behind the fault proxy, {a.delay_ms:.0f} ms per request; steps of 8 train + 8 val; "
                  f"commit={a.commit}; each log's commit waited for before the next log")
            rows = []
            proxy.delay(a.delay_ms / 1000)
            mark = 0  # requests before this are counted in `stretch`
            for step in range(1, a.steps + 1):
                for split, seed in (("train", 0), ("val", 1)):
                    marks = [len(seen)]
                    t = time.perf_counter()
                    model.log_sync(_group(step, seed), split=split, step=step)
                    took = time.perf_counter() - t
                    marks.append(len(seen))
                    model.flush()
                    marks.append(len(seen))
                    upkeep.wait(model.run.location, 300, stats=False)  # a stats refresh not due yet stays waiting
                    marks.append(len(seen))
                    # requests before the log (since the last one's upkeep) are upkeep's too (timers)
                    for phase, lo, hi in zip(("upkeep", *PHASES), [mark, *marks[:-1]], marks, strict=True):
                        for method, path in seen[lo:hi]:
                            stretch[(phase, *kind_and_place(method, path, run_prefix, store_prefix))] += 1
                    mark = marks[-1]
                    logs += 1
                    window.append((step, marks[1] - marks[0], took))
                if step in checkpoints:
                    model.run.wait_for_upkeep(300)
                    for method, path in seen[mark:]:
                        stretch[("upkeep", *kind_and_place(method, path, run_prefix, store_prefix))] += 1
                    mark = len(seen)
                    last = [c for c in window if c[0] > step - a.window]
                    n = statistics.median(c[1] for c in last)
                    ms = 1000 * statistics.median(c[2] for c in last)
                    per_phase = {ph: sum(v for k, v in stretch.items() if k[0] == ph) / logs for ph in PHASES}
                    reads = []
                    for read in (model.run.history, functools.partial(model.run.groups, split="train", step=step)) * 2:
                        before, t = len(seen), time.perf_counter()
                        read()
                        reads.append((len(seen) - before, 1000 * (time.perf_counter() - t), seen[before:]))
                    rows.append(f"| {step} | {n:.0f} | {ms:.0f} | {per_phase['commit']:.2f} | {per_phase['upkeep']:.2f} "
                                f"| {sum(per_phase.values()):.2f} | {reads[0][0]} / {reads[0][1]:.0f} "
                                f"| {reads[1][0]} / {reads[1][1]:.0f} | {reads[2][0]} / {reads[2][1]:.0f} "
                                f"| {reads[3][0]} / {reads[3][1]:.0f} |")
                    print(f"\nat step {step}, per log over the {logs} logs since the last checkpoint, by phase, kind, place:")
                    for (phase, kind, place), v in sorted(stretch.items(), key=lambda kv: (PHASES.index(kv[0][0]), -kv[1])):
                        print(f"  {phase:6} {kind:6} {place:40} {v / logs:6.2f}")
                    for name, (_, _, reqs) in zip(("history()", "read a step"), reads[:2], strict=True):
                        by = collections.Counter(kind_and_place(m, pa, run_prefix, store_prefix) for m, pa in reqs)
                        print(f"  {name}: " + ", ".join(f"{k} {pl} {v}" for (k, pl), v in by.most_common()))
                    stretch.clear()
                    logs, mark, window = 0, len(seen), []
            print("\n| at step | caller's requests per small log (median) | small log (ms) | commit requests per log "
                  "| upkeep requests per log | all requests per log | history(): requests / ms "
                  "| read a step: requests / ms | history() again | read a step again |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            print("\n".join(rows))
        finally:
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
