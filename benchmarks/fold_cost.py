"""Where one fold's CPU goes (`artstore.log.fold`): log STEPS steps of the steady small-log loop
(`benchmarks.upkeep_loop`) with the upkeep running, then ROUNDS rounds of 32 steps (64 logs) each
folded by hand, timing (process CPU, so Lance's own threads count) the fold and the calls inside
it: commits, dataset opens, the journal reads, decoding the payloads, writing the rows. Prints
the mean per fold, the count of each call per fold and the journal rows the last fold read.

    LANCE_LOG=error python -m benchmarks.fold_cost [--steps 100] [--rounds 5]

Run it at two lengths (say 100 and 1,500 steps) to see what grows with the run. The machine is
shared: compare with a baseline run alternating with this one, on the same load.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
from datetime import timedelta

import lance
from lance import LanceDataset

import artstore
from artstore.log import fold, journal, upkeep
from artstore.storage import fragment_rows, keys, writes
from benchmarks.upkeep_loop import log_steps

_cpu: collections.Counter[str] = collections.Counter()
_calls: collections.Counter[str] = collections.Counter()
_inside = threading.local()


def _timed(owner: object, name: str, label: str) -> None:
    """Count `owner.name`'s process CPU under `label`, only inside a fold (`FOLD` marks it)."""
    real = getattr(owner, name, None)
    if real is None:  # e.g. a function the code measured no longer has
        return

    def timed(*args, **kw):
        if label != "FOLD" and not getattr(_inside, "on", False):
            return real(*args, **kw)
        _inside.on = True
        t = time.process_time()
        try:
            return real(*args, **kw)
        finally:
            _cpu[label] += time.process_time() - t
            _calls[label] += 1
            if label == "FOLD":
                _inside.on = False

    setattr(owner, name, timed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    model = artstore.TrainableModel(name="agent", project="bench", base_model="x", base_path=tempfile.mkdtemp(),
                                    report_metrics=[], reader_window=timedelta(seconds=0.5))
    log_steps(model, range(1, a.steps + 1))
    upkeep.wait()
    upkeep.request_fold = lambda *args, **kw: None  # the rounds below fold by hand
    for owner, name, label in [
        (LanceDataset, "commit", "commit"), (lance, "dataset", "open"), (writes, "write_files", "write rows"),
        (journal, "payload_rows", "decode payloads"), (keys, "firsts_after", "read logs to fold"),
        (fragment_rows, "rows_at", "read payloads"), (fold, "fold", "FOLD"),
    ]:
        _timed(owner, name, label)
    done = {}
    for r in range(a.rounds):
        first = a.steps + 1 + 32 * r
        log_steps(model, range(first, first + 32))
        upkeep.wait()
        done = fold.fold(model.run.location)
    print(f"last fold {done}, journal rows it read {fold.rows_read(model.run.location)}")
    print("process cpu per fold (ms, count): " + ", ".join(
        f"{k} {1000 * _cpu[k] / a.rounds:.1f} ({_calls[k] / a.rounds:g})" for k in sorted(_cpu, key=lambda k: -_cpu[k])))


if __name__ == "__main__":
    main()
