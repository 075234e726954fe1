"""Several processes logging small steps to one run: aggregate logs/s, p95 latency, nothing lost;
beside OpenPipe ART 0.5.23 logging the same steps from one process (ART's own multi-process
logging loses rows: see FIELD_NOTES).

    LANCE_LOG=error python -m benchmarks.many_writers [--writers 4] [--logs 50] [--commit group|sync] [--cpus N]

Each writer process imports artstore, then logs ``--logs`` small train steps (1 group of 8) with
distinct steps, after 3 warm-up logs to a run of its own; the aggregate rate is all logs over the
span from the first writer's first log to the last writer's last (background upkeep is waited for
after that, before the rows are counted: logs, history rows and trajectories). With ``--commit
group`` (ARTSTORE_COMMIT=group in the writers) each writer's span ends once its queued logs are
committed (`Model.flush()`), so the rate counts logs other processes can see. Group is artstore's
default mode; ``--commit sync`` measures a Lance commit per log.

CPU per log is each side's process CPU (every thread) over its logs: artstore's writers all
together, ART's one process less the driver's building of the steps. ART's one process keeps one
core busy, so N writers reach N times its rate only with N cores and no more CPU per log than it
takes: the last line prints both. ``--cpus N`` confines both sides to N CPUs (``--writers 1
--cpus 1``: one writer against ART on one core each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.art_client import ArtDriver

ROOT = Path(__file__).resolve().parent.parent
TINY = {"n_groups": 1, "group_size": 8, "seed": 2}
WRITER = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from benchmarks.driver_protocol import take_stdout
out = take_stdout()  # before store_driver takes fd 1 for its own protocol
import artstore as art
from benchmarks.synthetic import make_step
from benchmarks.store_driver import build_groups
base, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = art.Model(name="shared", project="bench", base_path=base, report_metrics=[])
steps = [build_groups(make_step(k * 100000 + i, 1, 8, 2)) for i in range(n)]
warm = art.Model(name=f"warmup-{k}", project="bench", base_path=base, report_metrics=[])
for i in range(3):  # imports, threads, Lance's first open: not part of the timed loop
    warm.log_sync(build_groups(make_step(i, 1, 8, 2)), split="train", step=i)
warm.run.wait_for_upkeep(120)
print("ready", file=out, flush=True)
sys.stdin.readline()
times, start, cpu0, thread0 = [], time.time(), time.process_time(), time.thread_time()
for i, groups in enumerate(steps):
    t = time.perf_counter()
    model.log_sync(groups, split="train", step=k * 100000 + i)
    times.append(time.perf_counter() - t)
model.flush()  # group mode: until the queued logs are committed (sync: nothing to wait for)
end, cpu, thread = time.time(), time.process_time() - cpu0, time.thread_time() - thread0
model.run.wait_for_upkeep(120)
print(json.dumps({"times": times, "start": start, "end": end, "cpu": cpu, "thread": thread}), file=out, flush=True)
"""


def artstore_side(base: Path, writers: int, logs: int, commit: str = "group") -> dict:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(base), str(k), str(logs), str(ROOT)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "LANCE_LOG": "error", "ARTSTORE_COMMIT": commit})
             for k in range(writers)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    times, starts, ends, cpu, thread = [], [], [], 0.0, 0.0
    for p in procs:
        done = json.loads(p.stdout.readline())
        times += done["times"]
        starts.append(done["start"])
        ends.append(done["end"])
        cpu, thread = cpu + done["cpu"], thread + done["thread"]
        p.wait()
    wall = max(ends) - min(starts)  # from the first writer's first log to the last one's last
    import artstore as art

    run = art.open_store(base).run("bench", "shared")
    return {"logs_per_s": len(times) / wall, "p50_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * sorted(times)[int(0.95 * (len(times) - 1))], "expected": writers * logs,
            "cpu_ms_per_log": 1000 * cpu / len(times), "thread_cpu_ms_per_log": 1000 * thread / len(times),
            "logs_stored": run.logs().num_rows, "history_rows": run.history().num_rows,
            "trajectories": run.trajectories().num_rows, "expected_trajectories": writers * logs * 8}


def art_side(base: Path, logs: int) -> dict:
    art = ArtDriver(base, "bench", "single")
    try:
        art.warmup()
        t0, answers = time.perf_counter(), []
        for i in range(logs):
            answers.append(art.log(i, "train", synthetic=TINY))
        wall = time.perf_counter() - t0
    finally:
        art.close()
    times = [a["seconds"] for a in answers]
    # the driver's CPU between its first and last answer, less what it spent building the steps
    first, last = answers[0], answers[-1]
    cpu = (last["cpu"] - first["cpu"]) - (last["harness_cpu"] - first["harness_cpu"])
    return {"logs_per_s": len(times) / sum(times), "logs_per_s_wall": len(times) / wall,
            "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * sorted(times)[int(0.95 * (len(times) - 1))],
            "cpu_ms_per_log": 1000 * cpu / max(1, len(answers) - 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--logs", type=int, default=50)
    p.add_argument("--commit", choices=["sync", "group"], default="group", help="artstore's commit mode")
    p.add_argument("--cpus", type=int, default=None,
                   help="confine both sides (every process and thread) to this machine's first N CPUs")
    a = p.parse_args()
    if a.cpus is not None:  # inherited by every process started from here: the writers and ART's driver
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: a.cpus]))
    with tempfile.TemporaryDirectory(prefix="many-writers-") as tmp:
        ours = artstore_side(Path(tmp) / "store", a.writers, a.logs, a.commit)
        theirs = art_side(Path(tmp) / "art", a.writers * a.logs)
    print(json.dumps({"artstore": ours, "ART (1 process)": theirs}, indent=1))
    print(f"artstore ({a.commit} commit), {a.writers} processes: {ours['logs_per_s']:.1f} logs/s (p50 {ours['p50_ms']:.0f} ms, "
          f"p95 {ours['p95_ms']:.0f} ms; CPU per log {ours['cpu_ms_per_log']:.1f} ms, "
          f"{ours['thread_cpu_ms_per_log']:.1f} ms on the logging thread); stored {ours['logs_stored']}/{ours['expected']} logs, "
          f"{ours['history_rows']}/{ours['expected']} history rows, "
          f"{ours['trajectories']}/{ours['expected_trajectories']} trajectories")
    print(f"ART, 1 process: {theirs['logs_per_s']:.1f} logs/s in log() (p50 {theirs['p50_ms']:.0f} ms, "
          f"p95 {theirs['p95_ms']:.0f} ms; CPU per log {theirs['cpu_ms_per_log']:.1f} ms); "
          f"ratio {ours['logs_per_s'] / theirs['logs_per_s']:.2f}x")
    # What the cores allow: ART's one process keeps one core busy, N writers share this machine's.
    cores = len(os.sched_getaffinity(0))
    print(f"CPU per log, artstore / ART: {ours['cpu_ms_per_log'] / theirs['cpu_ms_per_log']:.2f}x; "
          f"{a.writers} writers on {cores} cores")


if __name__ == "__main__":
    main()
