"""Where the background CPU of small logs goes: the steady loop of `benchmarks.upkeep_loop` (1 group
x 8 trajectories, a train and a val log per step, after 59 warm-up steps), with the CPU of each OS
thread (the log() caller, the two upkeep lanes, Lance's own runtime threads) and the thread CPU of
each upkeep job kind (fold, journal compaction, payload drop, cleanup, version map, data-table
upkeep, stats), per log. Job figures are inclusive (a fold job holds its fold and its data tables'
upkeep) and count the Python thread only: the Lance threads' share is in the per-thread line.

    LANCE_LOG=error python -m benchmarks.upkeep_cpu [--steps 200] [--reader-window-s 0.5]

The machine is shared: compare with a baseline run alternating with this one, on the same load.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import threading
import time
from datetime import timedelta

from lance import LanceDataset

import artstore
from artstore.log import fold, run_stats, upkeep
from artstore.storage import compaction, version_map
from benchmarks.upkeep_loop import WARM_UP_STEPS, log_steps

_cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
_calls: collections.Counter[str] = collections.Counter()


def _timed(owner: object, name: str, label) -> None:
    real = getattr(owner, name)

    def timed(*args, **kw):
        kind = label(args) if callable(label) else label
        if threading.current_thread() is threading.main_thread():
            kind = "inline " + kind
        t = time.thread_time()
        try:
            return real(*args, **kw)
        finally:
            _cpu[kind] += time.thread_time() - t
            _calls[kind] += 1

    setattr(owner, name, timed)


def _threads_cpu() -> dict[int, float]:
    """CPU seconds of each OS thread of this process, by native id."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _thread_names() -> dict[int, str]:
    names = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except OSError:
            continue
    names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})
    return names


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reader-window-s", type=float, default=None)
    a = p.parse_args()
    _timed(upkeep, "_fold", "fold job")
    _timed(fold, "fold", "fold job: fold")
    _timed(upkeep, "_maintain", "journal job")
    _timed(fold, "drop_payloads", "journal job: payload drop")
    _timed(compaction, "maintain", lambda args: f"maintain {args[1]}")
    _timed(compaction, "_compact", lambda args: f"maintain {args[1]}: compaction")
    _timed(version_map, "record", "maintain logs: version map")
    _timed(LanceDataset, "cleanup_old_versions", "cleanup (any table)")
    _timed(upkeep, "_refresh_stats", "stats job")
    _timed(run_stats, "compute", "stats job: compute")
    window = {} if a.reader_window_s is None else {"reader_window": timedelta(seconds=a.reader_window_s)}
    model = artstore.TrainableModel(name="agent", project="bench", base_model="x", base_path=tempfile.mkdtemp(),
                                    report_metrics=[], **window)

    log_steps(model, range(1, WARM_UP_STEPS + 1))
    upkeep.wait()
    _cpu.clear()
    _calls.clear()
    before = _threads_cpu()
    cpu0, main0 = time.process_time(), time.thread_time()
    times = log_steps(model, range(WARM_UP_STEPS + 1, WARM_UP_STEPS + 1 + a.steps))
    cpu, main_cpu = time.process_time() - cpu0, time.thread_time() - main0
    after, names = _threads_cpu(), _thread_names()
    logs = 2 * a.steps
    print(f"train log p50 {1000 * times[len(times) // 2]:.1f} ms; cpu per log: process {1000 * cpu / logs:.2f} ms, "
          f"main thread {1000 * main_cpu / logs:.2f} ms, background {1000 * (cpu - main_cpu) / logs:.2f} ms")
    per_thread: collections.defaultdict[str, float] = collections.defaultdict(float)
    for tid, c in after.items():
        per_thread[names.get(tid, str(tid))] += c - before.get(tid, 0.0)
    print("cpu per log by thread (ms): " + ", ".join(
        f"{k} {1000 * v / logs:.2f}" for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v))
    print("thread cpu per log by upkeep job (ms, inclusive):")
    for kind in sorted(_cpu, key=lambda k: -_cpu[k]):
        print(f"  {kind:36s} {1000 * _cpu[kind] / logs:6.2f}  ({_calls[kind]} calls, "
              f"{1000 * _cpu[kind] / _calls[kind]:.1f} ms each)")


if __name__ == "__main__":
    main()
