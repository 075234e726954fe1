"""CPU of one small `Model.log_sync` (1 group of 8 trajectories, train), beside a baseline checkout.

Each round runs this checkout and the baseline (another artstore checkout, e.g. main) one after
the other, each in its own process: 40 warm steps, then `--logs` train logs (a val log after
each, untimed). Per side: the median latency, the median CPU time of the logging thread
(`time.thread_time`) and of the process (all threads: Lance's, and the background upkeep's when
it runs), and the logging thread's CPU per piece of the path (each function wrapped). On a
shared machine the thread's CPU is the figure that compares two versions: latency swings with
the load far more. The last rows time what a log spends on the builder's scenario ids once 600
or 6,000 were seen (a cost that grows with the run: the benchmark data adds one id a step).

    LANCE_LOG=error python -m benchmarks.log_cpu --baseline /work/main [--rounds 2] [--logs 150]
        [--upkeep wait|run]

`--upkeep wait` (default) waits for the background upkeep before each log, so the figures are
the log's own; `run` leaves it running beside the logs, as `benchmarks.growth` does.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIECES = [("artstore.log.commit", "encode_groups"), ("artstore.log.commit", "_content_id"),
          ("artstore.log.commit", "_set_ids"), ("artstore.log.journal", "to_ipc"), ("artstore.log.commit", "_winner"),
          ("artstore.storage.writes", "write_files"), ("artstore.storage.writes", "commit_files"),
          ("artstore.art.model", "compute_metrics"), ("artstore.log.sums", "Tracker.settle")]


def _child(logs: int, wait: bool) -> dict:
    import importlib

    import artstore
    from artstore.log import upkeep
    from benchmarks.store_driver import build_groups
    from benchmarks.synthetic import make_step

    cpu: dict[str, float] = collections.defaultdict(float)
    main_thread = [0]

    def timed(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*a, **k):
            if main_thread[0] != __import__("threading").get_ident():
                return fn(*a, **k)  # the background upkeep's calls are not the log's
            c = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[label] += time.thread_time() - c
        setattr(owner, name, wrapper)

    for module, name in PIECES:
        owner = importlib.import_module(module)
        *path, attr = name.split(".")
        for p in path:
            owner = getattr(owner, p)
        timed(owner, attr, attr)
    main_thread[0] = __import__("threading").get_ident()
    model = artstore.TrainableModel(name="agent", project="bench", base_model="x", base_path=tempfile.mkdtemp(),
                                    report_metrics=[])
    for step in range(1, 41):
        model.log_sync(build_groups(make_step(step, 1, 8, 3)), split="train", step=step)
        model.log_sync(build_groups(make_step(step, 1, 8, 4)), split="val", step=step)
    cpu.clear()
    wall, thread, process = [], [], []
    for step in range(41, 41 + logs):
        train, val = build_groups(make_step(step, 1, 8, 3)), build_groups(make_step(step, 1, 8, 4))
        if wait:
            upkeep.wait(model.run.location, 60)
        w, t, p = time.perf_counter(), time.thread_time(), time.process_time()
        model.log_sync(train, split="train", step=step)
        wall.append(time.perf_counter() - w)
        thread.append(time.thread_time() - t)
        process.append(time.process_time() - p)
        saved = dict(cpu)
        if wait:
            upkeep.wait(model.run.location, 60)
        model.log_sync(val, split="val", step=step)
        cpu.clear()
        cpu.update(saved)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    return {"wall": ms(wall), "thread": ms(thread), "process": ms(process),
            "pieces": {k: 1000 * v / logs for k, v in cpu.items()}, **{f"ids {n}": _ids_ms(n) for n in IDS}}


IDS = (600, 6000)  # scenario ids seen so far: the benchmark data adds one a step


def _ids_ms(n: int) -> float:
    """ms a Model log spends on the builder's scenario ids when `n` were seen: the sums snapshot
    before and after the log (one new id), their delta, and its apply (best of 5 x 50)."""
    import timeit

    from artstore.log import sums
    from artstore.records.metrics_builder import MetricsBuilder

    builder = MetricsBuilder("train")
    known = [f"scenario-{i:06d}" for i in range(n)]
    builder.load_sums({"cum_state": {"a": 1.0}, "unique_scenario_ids": known})
    base = sums.apply(sums.empty(), {"ids": known})
    snapshot = getattr(builder, "sums_snapshot", builder.state_dict)  # (a baseline without it sorts)

    def one() -> None:
        before = snapshot()
        builder._shared.unique_ids.add("scenario-new")
        sums.apply(base, sums.delta(before, snapshot()))
        builder._shared.unique_ids.discard("scenario-new")

    return 1000 * min(timeit.repeat(one, number=50, repeat=5)) / 50


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="root of another artstore checkout (holding artstore/)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--logs", type=int, default=150)
    p.add_argument("--upkeep", choices=["wait", "run"], default="wait")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a file for one side's figures
    a = p.parse_args()
    if a.child:  # (a file: the drivers' module takes stdout over for their protocol)
        Path(a.child).write_text(json.dumps(_child(a.logs, a.upkeep == "wait")))
        return
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        # the baseline's artstore with this checkout's benchmarks (the same data and timing)
        base = Path(tmp)
        (base / "artstore").symlink_to(Path(a.baseline).resolve() / "artstore")
        (base / "benchmarks").symlink_to(here / "benchmarks")
        sides = {"this": here, "baseline": base}
        results: dict[str, list[dict]] = {k: [] for k in sides}
        for _ in range(a.rounds):
            for name, root in sides.items():
                out = base / f"{name}.json"
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.log_cpu", "--baseline", a.baseline, "--child", str(out),
                     "--logs", str(a.logs), "--upkeep", a.upkeep],
                    cwd=root, env={**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"},
                    stdout=subprocess.DEVNULL, check=True)
                results[name].append(json.loads(out.read_text()))
    print(f"| median per train log (ms), upkeep {a.upkeep} | baseline | this | this / baseline |")
    print("| --- | ---: | ---: | ---: |")
    rows = [("latency", "wall"), ("CPU, logging thread", "thread"), ("CPU, process", "process")]
    rows += [(f"thread CPU: {name.split('.')[-1]}", name.split(".")[-1]) for _, name in PIECES]
    rows += [(f"scenario ids of a log, {n:,} seen", f"ids {n}") for n in IDS]
    for label, key in rows:
        def value(side: str, key: str = key) -> float:
            return statistics.median(r[key] if key in r else r["pieces"].get(key, 0.0) for r in results[side])
        b, t = value("baseline"), value("this")
        print(f"| {label} | {b:.2f} | {t:.2f} | {t / b if b else float('nan'):.2f}x |")


if __name__ == "__main__":
    main()
