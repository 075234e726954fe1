"""The store every engine test reads: 3 journal runs (artstore's log format since issue 13), a
SIGKILLed writer in two of them, a pair of racing retries of one log_id (two processes), orphan
rows in a folded run's data tables that a compaction merged into fragments with committed rows
(as a killed fold or a run before the journal leaves them), a run never folded (every row in its
journal), and a tag followed by more, unfolded, logs.

`truth(store, table, as_of)` is Store.sql's answer per run: (rows, sum of a numeric column).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

import artstore as art
from artstore.log import group_commit
from artstore.schema import arrow_schema
from artstore.storage import writes

WRITER = str(Path(__file__).with_name("writer_proc.py"))
RUNS = ("p/a", "p/b", "q/c")
TAG = "before-more"
# what each table's check sums (a numeric column of the view)
SUMS = {"trajectories": "reward", "groups": "num_trajectories", "metrics": "value", "logs": "num_trajectories"}
TABLES = tuple(SUMS)


def _log(store: str, run: str, step: int, reward: float, n: int = 3) -> None:
    project, name = run.split("/")
    model = art.Model(name=name, project=project, base_path=store, report_metrics=[])
    trajectories = [art.Trajectory(messages_and_choices=[{"role": "user", "content": f"{run} {step} {i}"}],
                                   reward=reward + i) for i in range(n)]
    model.log_sync([art.TrajectoryGroup(trajectories)], split="val" if step % 2 else "train", step=step)


def _crash(store: str, run: str, log_id: str) -> None:
    spec = {"store": store, "run": run, "log_id": log_id, "reward": 1000.0, "mode": "crash"}
    proc = subprocess.Popen([sys.executable, WRITER, json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _race(store: str, run: str, log_id: str, tmp: Path) -> None:
    procs = []
    for me, other, reward in (("x", "y", 500.0), ("y", "x", 700.0)):
        spec = {"store": store, "run": run, "log_id": log_id, "reward": reward, "mode": "race",
                "me": str(tmp / me), "other": str(tmp / other)}
        procs.append(subprocess.Popen([sys.executable, WRITER, json.dumps(spec)], stdout=subprocess.PIPE, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0 and out.strip() == "done"


def build(path: Path) -> str:
    """Make the store under `path` (returns its uri)."""
    store = str(path / "store")
    (path / "race").mkdir()
    for k, run in enumerate(RUNS):
        for step in range(4):
            _log(store, run, step, reward=10.0 * k + step)
    _crash(store, "p/a", "crashed-a")
    _race(store, "p/a", "raced", path / "race")
    _crash(store, "p/b", "crashed-b")
    s = art.open_store(store)
    a = s.run("p", "a")
    a.compact()  # folds the journal into the data tables
    for table in ("trajectories", "groups", "metrics"):
        orphan = a.read_table(table).slice(0, 2).set_column(
            arrow_schema(table).get_field_index("write_id"), "write_id", pa.array(["crashed-fold"] * 2))
        writes.append(a.table_location(table), orphan)
    a.compact()  # the orphans now share fragments with committed rows
    s.run("q", "c").compact()
    s.run("q", "c").tag(TAG)
    for step in range(4, 6):
        _log(store, "q/c", step, reward=50.0 + step)
        _log(store, "p/b", step, reward=60.0 + step)
    group_commit.flush()  # engines read in other processes (Ray, Spark): every log is committed first
    return store


def truth(store: art.Store, table: str, as_of=None) -> dict[str, tuple[int, float]]:
    """Store.sql's rows and sum per run of `table`."""
    got = store.sql(f"SELECT project || '/' || model AS run, count(*) AS n, sum({SUMS[table]})::DOUBLE AS s "
                    f"FROM {table} GROUP BY ALL", as_of=as_of)
    return {r["run"]: (r["n"], round(r["s"], 6)) for r in got.to_pylist()}


def tally(name: str, table) -> dict[str, tuple[int, float]]:
    """The same per-run figures of a pyarrow Table of `name` read through an engine."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    keys = pc.binary_join_element_wise(pc.cast(table["project"], pa.string()), pc.cast(table["model"], pa.string()), "/")
    for run in sorted(set(keys.to_pylist())):
        rows = table.filter(pc.equal(keys, run))
        out[run] = (rows.num_rows, round(float(pc.sum(rows[SUMS[name]]).as_py()), 6))
    return out
