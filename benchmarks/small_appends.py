"""Small appends: N logs of K tool-call trajectories each to one run, with the automatic
maintenance that `log()` asks for (tiered compaction, cleanup outside the retention window, done
of old versions by a background thread: `artstore.log.upkeep`).

Prints, per fifth of the run, the wall and CPU time per log and what maintenance rewrote; the
largest fragment count and `_versions/` size seen per table (sampled every 50 logs); and the
latency of reading one step (`Run.groups(step=...)`) on the live store against the same data
compacted by hand (a copy, `Run.compact()`). tests/test_small_appends.py runs the same code.

    LANCE_LOG=error python -m benchmarks.small_appends [--logs 2000] [--per-log 8] [--retention-s 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import artstore as art
from artstore.storage import compaction, fragments, scans
from benchmarks.log_hot_path import tool_call_trajectory

TABLES = ("trajectories", "groups", "metrics", "logs")


def log_groups(i: int, per_log: int) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(i, i * per_log + j) for j in range(per_log)])


def _size(path: Path) -> int | None:
    """Bytes of `path`; None when it went (a background cleanup may remove it meanwhile)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def table_stats(run: art.Run) -> dict[str, dict[str, int]]:
    """Fragments, manifests in `_versions/` and their bytes, per table (local stores)."""
    out = {}
    for t in TABLES:
        folder = Path(run.table_location(t).uri) / "_versions"
        if not folder.is_dir():  # a data table the first fold has not created yet
            continue
        sizes = [_size(f) for f in folder.iterdir()]
        sizes = [n for n in sizes if n is not None]
        out[t] = {"fragments": fragments.fragment_count(run.table_location(t)), "manifests": len(sizes),
                  "versions_bytes": sum(sizes)}
    return out


@dataclass
class Fill:
    """What happened while filling a run: per-log times, maintenance, and the worst stats seen."""

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    maintenance: list[tuple[int, str, dict[str, int]]] = field(default_factory=list)  # (log, table, result)
    worst: dict[str, dict[str, int]] = field(default_factory=dict)

    def see(self, stats: dict[str, dict[str, int]]) -> None:
        for t, st in stats.items():
            w = self.worst.setdefault(t, dict.fromkeys(st, 0))
            for k, v in st.items():
                w[k] = max(w[k], v)


def fill(model: art.Model, logs: int, per_log: int, tag_at: int = 10, sample_every: int = 50) -> Fill:
    """Log `logs` times to `model` (log ids `log-{i}`, step i); tag the run "early" after `tag_at`
    logs; sample `table_stats` every `sample_every` logs."""
    out = Fill()
    maintain = compaction.maintain

    def recording(loc, table, retention, force=False, **kw):
        result = maintain(loc, table, retention, force, **kw)
        out.maintenance.append((len(out.wall_ms), table, result))
        return result

    compaction.maintain = recording
    try:
        for i in range(logs):
            g = log_groups(i, per_log)
            t, c = time.perf_counter(), time.process_time()
            model.log_sync(g, split="train", step=i, log_id=f"log-{i}")
            out.wall_ms.append((time.perf_counter() - t) * 1000)
            out.cpu_ms.append((time.process_time() - c) * 1000)
            if i + 1 == tag_at:
                model.run.tag("early")
            if (i + 1) % sample_every == 0:
                out.see(table_stats(model.run))
        model.run.wait_for_upkeep()  # the background cleanup the last logs asked for
    finally:
        compaction.maintain = maintain
    out.see(table_stats(model.run))
    return out


def disk_usage(run_dir: Path) -> str:
    """Bytes the run takes on disk: all, data files, manifests, transaction files; file count."""
    found = {p: _size(p) for p in run_dir.rglob("*") if p.is_file()}

    def mib(part: str) -> float:
        return sum(n or 0 for p, n in found.items() if part in p.parts) / 2**20

    total = sum(n or 0 for n in found.values()) / 2**20
    return (f"bytes: {total:.1f} MiB in {len(found)} files; data {mib('data'):.1f} MiB, "
            f"_versions {mib('_versions'):.1f} MiB, _transactions {mib('_transactions'):.1f} MiB")


def read_ms(run: art.Run, steps: list[int], repeats: int = 3) -> float:
    """Median ms of `Run.groups(step=s)` over `steps`, each read `repeats` times."""
    times = []
    for _ in range(repeats):
        for s in steps:
            t = time.perf_counter()
            run.groups(step=s)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def compacted_copy(run: art.Run, into: str) -> art.Run:
    """A copy of the run's store at `into`, every table compacted by hand."""
    shutil.copytree(run.store.location.uri, into)
    copy = art.open_store(into).run(run.project, run.name)
    copy.compact()
    return copy


def report(f: Fill, logs: int, run: art.Run) -> None:
    fifth = max(1, logs // 5)
    for k in range(0, logs, fifth):
        m = [r for i, _, r in f.maintenance if k <= i < k + fifth]
        print(f"  logs {k:5d}-{k + fifth - 1:5d}: wall median {statistics.median(f.wall_ms[k:k + fifth]):6.1f} ms, "
              f"cpu mean {statistics.mean(f.cpu_ms[k:k + fifth]):5.1f} ms/log; "
              f"{sum(r['compacted'] > 0 for r in m):3d} compactions rewrote {sum(r['rewritten_rows'] for r in m):6d} rows")
    for t, w in f.worst.items():
        rows = scans.scan(run.table_location(t), columns=["write_id"]).num_rows
        rewritten = sum(r["rewritten_rows"] for _, table, r in f.maintenance if table == t)
        print(f"  {t:12s} at most {w['fragments']:3d} fragments, {w['manifests']:3d} manifests, "
              f"{w['versions_bytes'] / 1024:6.1f} KiB of _versions/; compaction rewrote each row "
              f"{rewritten / rows:.1f} times")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--logs", type=int, default=2000)
    p.add_argument("--per-log", type=int, default=8)
    p.add_argument("--retention-s", type=float, default=0.0)
    a = p.parse_args()
    root = tempfile.mkdtemp()
    model = art.Model(name="small", project="appends", base_path=os.path.join(root, "live"), report_metrics=[],
                      retention=timedelta(seconds=a.retention_s))
    t0 = time.perf_counter()
    f = fill(model, a.logs, a.per_log)
    print(f"{a.logs} logs x {a.per_log} trajectories, retention {a.retention_s} s: {time.perf_counter() - t0:.1f} s "
          f"(wall per log: median {statistics.median(f.wall_ms):.1f} ms, max {max(f.wall_ms):.0f} ms)")
    report(f, a.logs, model.run)
    print(disk_usage(Path(model.run.location.uri)))
    steps = list(range(0, a.logs, max(1, a.logs // 10)))
    live = read_ms(model.run, steps)
    compact = read_ms(compacted_copy(model.run, os.path.join(root, "compacted")), steps)
    print(f"read one step: live {live:.1f} ms, compacted {compact:.1f} ms, ratio {live / compact:.2f}")
    print(f"versions listed: {len(model.run.versions())}, tag 'early' reads {len(model.run.groups(as_of='early'))} groups")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
