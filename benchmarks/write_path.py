"""Write path of one small log through `artstore.log.commit.write_log` (no Model front end, so
no history state): median latency per window of steps, and where it goes (the look-up `_winner`,
`writes.write_files`, `writes.commit_files`, `encode_groups`, `_content_id`), as a run grows.

    LANCE_LOG=error python -m benchmarks.write_path [--steps 1000] [--checkpoints 100,1000]
        [--window 50] [--uri DIR_OR_S3]

Each step logs a train and a val log of 1 group of 8 trajectories (the growth benchmark's data).
Background upkeep (fold, compaction, cleanup) is waited for before each log, so the figure is the
log's own. The pieces are timed by wrapping the module functions (nested calls are counted where
they run: `write_files` runs on a pool thread beside the look-up, so the pieces don't add up).
The CPU column is the process's CPU time per log (all threads, Lance's included): a loaded
machine inflates it far less than the latency, so it compares two versions better.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict

from artstore.log import commit, upkeep
from artstore.records import encoding
from artstore.storage import Location, writes
from benchmarks.store_driver import build_groups
from benchmarks.synthetic import make_step

PIECES: dict[str, list[float]] = defaultdict(list)


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PIECES[name].append(time.perf_counter() - t)
    return wrapper


def _instrument() -> None:
    commit._winner = _timed("_winner", commit._winner)
    commit._content_id = _timed("_content_id", commit._content_id)
    commit.encode_groups = _timed("encode_groups", encoding.encode_groups)
    writes.write_files = _timed("write_files", writes.write_files)
    writes.commit_files = _timed("commit_files", writes.commit_files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--checkpoints", default="100,1000")
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--uri", default=None)
    a = p.parse_args()
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    _instrument()
    run = Location.parse(a.uri or tempfile.mkdtemp(prefix="write-path-")).child("bench", "models", "agent")
    print("| at step | small log (ms, median) | CPU of the process (ms, median) | " + " | ".join(["_winner", "write_files", "commit_files",
                                                          "encode_groups", "_content_id"]) + " |")
    print("| ---: " * 8 + "|")
    lat: list[float] = []
    cpu: list[float] = []
    for step in range(1, a.steps + 1):
        counted = any(c - a.window < step <= c for c in checkpoints)
        for split, seed in (("train", 3), ("val", 4)):
            groups = build_groups(make_step(step, 1, 8, seed))
            upkeep.wait(run, 120)
            if not counted:
                commit.write_log(run, groups, split=split, step=step)
                continue
            t, c = time.perf_counter(), time.process_time()
            commit.write_log(run, groups, split=split, step=step)
            lat.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        if not counted:
            PIECES.clear()
        if step in checkpoints:
            pieces = [1000 * statistics.median(PIECES[k]) if PIECES[k] else 0.0
                      for k in ("_winner", "write_files", "commit_files", "encode_groups", "_content_id")]
            print(f"| {step} | {1000 * statistics.median(lat):.1f} | {1000 * statistics.median(cpu):.1f} | " + " | ".join(f"{x:.1f}" for x in pieces) + " |",
                  flush=True)
            lat.clear()
            cpu.clear()
            PIECES.clear()


if __name__ == "__main__":
    main()
