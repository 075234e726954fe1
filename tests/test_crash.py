"""Invariant 1: a writer killed (SIGKILL) at any instant leaves the store readable at its last
committed state: every acknowledged log is there, whole, and no log is there in part.

A real logging process (tests/crash_writer.py) logs in a loop and prints each log id after
`log_sync` returned; the test kills it at random moments, 53 times, on one store, then reads the
run through the public API. Each writer first retries the log that was in flight when the previous
one died, so crashed attempts followed by retries are part of every trial.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import artstore as art
from artstore.records.metrics import compute_metrics
from artstore.storage import scans
from tests.crash_writer import MODEL, PROJECT, log_content

WRITER = str(Path(__file__).with_name("crash_writer.py"))
ROOT = str(Path(__file__).resolve().parent.parent)
FRESH_TRIALS = 3    # a new interpreter per writer (python tests/crash_writer.py ...)
FORKED_TRIALS = 50  # a writer forked from a server that imported artstore once (10 ms, not 1.5 s)
TIMEOUT_S = 60


def _lines(stream) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _next(q: queue.Queue, ledger: list[str], until: str) -> str:
    """Lines up to the first starting with `until` (try/ack lines go to `ledger`)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"writer output ended before {until!r}")
        if line.startswith(("try ", "ack ")):
            ledger.append(line)
        if line.startswith(until):
            return line


class Writers:
    """Starts writers (fresh or forked), kills them with SIGKILL, and collects their try/ack lines."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.server = subprocess.Popen([sys.executable, WRITER, "--serve"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env=env)
        self.server_lines = _lines(self.server.stdout)

    def run(self, spec: dict, fresh: bool, rng: random.Random) -> list[str]:
        ledger: list[str] = []
        if fresh:
            proc = subprocess.Popen([sys.executable, WRITER, json.dumps(spec)], stdout=subprocess.PIPE,
                                    text=True, env=self.env)
            q, kill = _lines(proc.stdout), proc.kill
        else:
            self.server.stdin.write(json.dumps(spec) + "\n")
            self.server.stdin.flush()
            q = self.server_lines
            pid = int(_next(q, ledger, "pid ").split()[1])

            def kill():
                os.kill(pid, signal.SIGKILL)

        if rng.random() < 0.25:  # early: often inside the first commit (or the run's creation)
            _next(q, ledger, "try ")
            time.sleep(rng.uniform(0, 0.1))
        else:
            _next(q, ledger, "ack ")
            time.sleep(rng.uniform(0, 0.3))
        kill()
        if fresh:
            proc.wait(TIMEOUT_S)
            for line in iter(lambda: q.get(timeout=TIMEOUT_S), None):
                if line.startswith(("try ", "ack ")):
                    ledger.append(line)
        else:
            _next(q, ledger, f"exit {pid}")
        return ledger

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(TIMEOUT_S)


def _expected_counts(log_id: str) -> tuple[int, int, int, list]:
    split, _, groups = log_content(log_id)
    n_traj = sum(len(g.trajectories) for g in groups)
    return n_traj, len(groups), len(compute_metrics(groups, split)), groups


def check_run(run: art.Run, tried: set[str], acked: set[str], recent: set[str]) -> set[str]:
    """Every visible log is whole, every acknowledged one visible; `recent` logs read back equal.
    Returns the visible log ids."""
    run.validate()
    visible = run.logs()["log_id"].to_pylist()
    assert len(visible) == len(set(visible)), "a log committed twice"
    assert acked <= set(visible), f"acknowledged logs lost: {sorted(acked - set(visible))}"
    assert set(visible) <= tried
    expected = {lid: _expected_counts(lid) for lid in visible}

    traj = run.trajectories()
    assert len(set(traj["trajectory_id"].to_pylist())) == traj.num_rows
    assert Counter(traj["log_id"].to_pylist()) == {lid: e[0] for lid, e in expected.items() if e[0]}
    grp = run.read_table("groups", columns=["log_id"])
    assert Counter(grp["log_id"].to_pylist()) == {lid: e[1] for lid, e in expected.items()}
    met = run.metrics()
    assert Counter(met["log_id"].to_pylist()) == {lid: e[2] for lid, e in expected.items()}
    hist = run.history()
    assert hist.num_rows == len(visible)
    metric_cols = hist.column_names[2:]
    by_step = {log_content(lid)[1]: lid for lid in visible}
    for i, step in enumerate(hist["step"].to_pylist()):
        assert sum(hist[c][i].is_valid for c in metric_cols) == expected[by_step[step]][2]
    for lid in recent & set(visible):
        _, step, groups = log_content(lid)
        assert run.groups(step=step) == groups, f"log {lid} reads back different"
    return set(visible)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_every_acked_log_whole_and_no_partial_log(tmp_path):
    store = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": ROOT, "LANCE_LOG": "error"}
    rng = random.Random(1122)
    writers = Writers(env)
    run = art.open_store(store).run(PROJECT, MODEL)
    tried: set[str] = set()
    acked: set[str] = set()
    retry = None
    stats = Counter()
    try:
        for trial in range(FRESH_TRIALS + FORKED_TRIALS):
            t0 = time.perf_counter()
            ledger = writers.run({"store": store, "prefix": f"t{trial}", "retry": retry},
                                 fresh=trial < FRESH_TRIALS, rng=rng)
            now_tried = [x.split()[1] for x in ledger if x.startswith("try ")]
            now_acked = {x.split()[1] for x in ledger if x.startswith("ack ")}
            tried |= set(now_tried)
            acked |= now_acked
            stats["writer_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            in_flight = now_tried[-1] if now_tried and now_tried[-1] not in now_acked else None
            if not run.exists():
                assert not acked
                stats["killed before the run existed"] += 1
            else:
                visible = check_run(run, tried, acked, set(now_tried))
                stats["in-flight log visible (committed, not acked)"] += in_flight in visible
                if retry is not None:
                    stats["retried log acked"] += retry in now_acked
            stats["check_s"] += time.perf_counter() - t0
            stats["acked"] += len(now_acked)
            retry = in_flight
    finally:
        writers.close()
    assert sum(len(g.trajectories) for g in run.groups()) == run.trajectories().num_rows
    raw = scans.scan(run.table_location("logs"), columns=["write_id"])  # a log is one logs row
    stats["logs rows of losing attempts (invisible)"] = raw.num_rows - run.logs().num_rows
    print(dict(stats))
    assert stats["acked"] >= FRESH_TRIALS + FORKED_TRIALS
    assert stats["retried log acked"] > 0
