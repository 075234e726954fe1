"""A steady small-log loop and the upkeep it costs: 200 back-to-back small train logs (1 group x 8
trajectories), each followed by a val log, after 59 warm-up steps (the lead's profile of issue 13,
without the profiler).

Prints the p50/p90 of the train log, how many compactions ran on the log path itself (inline:
normal operation should make none), and the CPU per 1000 logs of the whole process, of the main
thread (the log calls) and of the rest (the upkeep threads and Lance's own threads).

    LANCE_LOG=error python -m benchmarks.upkeep_loop [--steps 200]

The machine is shared: compare with a baseline run alternating with this one, on the same load.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import artstore
from artstore.storage import compaction
from benchmarks.store_driver import build_groups
from benchmarks.synthetic import make_step

WARM_UP_STEPS = 59


def log_steps(model: artstore.Model, steps: range) -> list[float]:
    """Log a small train and a val log (1 group x 8 trajectories each) per step; the train logs'
    latencies in seconds, sorted."""
    times = []
    for s in steps:
        train, val = build_groups(make_step(s, 1, 8, 3)), build_groups(make_step(s, 1, 8, 4))
        t = time.perf_counter()
        model.log_sync(train, split="train", step=s)
        times.append(time.perf_counter() - t)
        model.log_sync(val, split="val", step=s)
    return sorted(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    a = p.parse_args()
    inline: list[str] = []
    real = compaction.maintain

    def recording(*args, **kw):
        if threading.current_thread() is threading.main_thread():
            inline.append(args[1])
        return real(*args, **kw)

    compaction.maintain = recording
    model = artstore.TrainableModel(name="agent", project="bench", base_model="x", base_path=tempfile.mkdtemp(),
                                    report_metrics=[])

    log_steps(model, range(1, WARM_UP_STEPS + 1))
    inline.clear()
    cpu0, main0 = time.process_time(), time.thread_time()
    times = log_steps(model, range(WARM_UP_STEPS + 1, WARM_UP_STEPS + 1 + a.steps))
    cpu, main_cpu = time.process_time() - cpu0, time.thread_time() - main0
    logs = 2 * a.steps
    print(f"train log p50 {1000 * times[len(times) // 2]:.1f} ms p90 {1000 * times[int(len(times) * 0.9)]:.1f} ms; "
          f"inline compactions {len(inline)}; cpu per 1000 logs: process {1000 * cpu / logs:.1f} s, "
          f"main thread {1000 * main_cpu / logs:.1f} s, background {1000 * (cpu - main_cpu) / logs:.1f} s")


if __name__ == "__main__":
    main()
