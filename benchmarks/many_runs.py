"""Many runs in one store (issue 13's "500 runs"), beside ART's files, in one run:

    LANCE_LOG=error python -m benchmarks.many_runs [--runs 500] [--steps 2] [--repeats 5] [--out DIR]

Each run logs --steps steps of one train group and one val group of 8 tool-calling rollouts,
through artstore's `Model.log`, and ART's way (`trajectories/{split}/{step:04d}.parquet` with ART's
columns, `history.jsonl`, `model.json`, `state.json`). Then times, beside ART in the same run:

1. `open_store().runs()` (one scan of the store's registry of runs) vs a glob of ART's
   `{project}/models/{name}/` folders (the walk of the store's folders, as before the registry,
   for reference);
2. `artstore runs` in a fresh process (wall and CPU), and a fresh `python -c "import artstore.cli"`,
   with artstore's bytecode compiled first (as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE
   set and no `__pycache__`, every start would compile artstore's modules, ~0.2 s of CPU);
3. the cross-run aggregate, mean train reward per run and step over every run: `Store.sql`'s first
   query in a fresh process (the time of the call; its imports timed apart) and later queries of a
   Store kept open, vs DuckDB over ART's parquet files (a fresh connection each time, as a notebook
   cell would; and in a fresh process, `import duckdb` timed apart), interleaved;
4. a query pinned to one run (`WHERE project = ? AND model = ?`): its time, and how many runs
   it opened (from the versions the result says it read).

The store is built once under --out (default .bench/many_runs/) and reused (--rebuild starts
over). Its runs are measured quiet: the build waits until each run's journal is folded, as a
writer's upkeep does once its run has had no log for a few seconds, or at exit
(`artstore.log.idle_fold`); a store built before that keeps what its build left. The figures are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import artstore as art
from artstore.log import idle_fold, registry, upkeep
from artstore.read.sql import versions_read
from benchmarks.sql_bench import _art_table, _pool

AGGREGATE = ("SELECT project, model, step, avg(reward) AS mean_reward FROM trajectories WHERE split = 'train' "
             "GROUP BY ALL ORDER BY ALL")
PINNED = ("SELECT step, avg(reward) AS mean_reward FROM trajectories WHERE project = ? AND model = ? "
          "AND split = 'train' GROUP BY ALL ORDER BY ALL")


# A fresh process: first the imports `Store.sql` needs (duckdb, pyarrow.dataset, lance), timed
# apart, as DuckDB's side has its module imported; then the first query.
FIRST_QUERY = f"""
import resource, sys, time, artstore as art
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t, c = time.perf_counter(), cpu()
import artstore.read.sql
print(1000 * (time.perf_counter() - t), 1000 * (cpu() - c))
store = art.open_store(sys.argv[1])
t, c = time.perf_counter(), cpu()
store.sql({AGGREGATE!r})
print(1000 * (time.perf_counter() - t), 1000 * (cpu() - c))
"""
# DuckDB over ART's files in a fresh process, the same way: `import duckdb`, then the query.
DUCK_FIRST = """
import resource, sys, time
from pathlib import Path
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t, c = time.perf_counter(), cpu()
import duckdb
print(1000 * (time.perf_counter() - t), 1000 * (cpu() - c))
from benchmarks.many_runs import _art_aggregate
t, c = time.perf_counter(), cpu()
_art_aggregate(Path(sys.argv[1]))
print(1000 * (time.perf_counter() - t), 1000 * (cpu() - c))
"""


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def build(root: Path, runs: int, steps: int) -> None:
    """Write the store (root/store) and ART's files (root/art); skipped when a build is there."""
    marker = root / "built.json"
    if marker.exists() and json.loads(marker.read_text()) == {"runs": runs, "steps": steps}:
        return
    shutil.rmtree(root, ignore_errors=True)
    import pyarrow.parquet as pq

    pool = _pool(random.Random(7), 64)
    t0 = time.perf_counter()
    for i in range(runs):
        rng = random.Random(i)
        project, name = f"proj{i % 10}", f"agent-{i:04d}"
        model = art.Model(name=name, project=project, base_path=str(root / "store"), report_metrics=[])
        run_dir = root / "art" / project / "models" / name
        history = []
        for step in range(steps):
            for split in ("train", "val"):
                picks = [rng.choice(pool) for _ in range(8)]
                rewards = [rng.random() for _ in picks]
                group = art.TrajectoryGroup([t.model_copy(update={"reward": r}) for (t, _, _), r in
                                             zip(picks, rewards, strict=True)])
                record = model.log_sync([group], split=split, step=step)
                path = run_dir / "trajectories" / split / f"{step:04d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(_art_table([picks], [rewards]), path, compression="zstd")
                history.append({**record.metrics, "step": step, "recorded_at": record.recorded_at.isoformat()})
        (run_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        for f in ("model.json", "state.json"):
            (run_dir / f).write_text(json.dumps({"name": name, "project": project}))
        print(f"\r  built {i + 1}/{runs} runs ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    idle_fold.flush()  # the runs logged last are folded now, as they would be once quiet (or at exit)
    upkeep.wait()  # folds and the registry's stats of every run
    print(file=sys.stderr)
    marker.write_text(json.dumps({"runs": runs, "steps": steps}))


def _art_aggregate(root: Path) -> Any:
    import duckdb

    files = f"{root / 'art'}/*/models/*/trajectories/train/*.parquet"
    con = duckdb.connect()
    try:
        return con.sql(f"""
            WITH per_file AS (SELECT filename, avg(reward) AS mean_reward
                              FROM read_parquet('{files}', filename = true) GROUP BY filename)
            SELECT parts[-6] AS project, parts[-4] AS model,
                   CAST(replace(parts[-1], '.parquet', '') AS BIGINT) AS step, mean_reward
            FROM (SELECT string_split(filename, '/') AS parts, * FROM per_file) ORDER BY ALL""").fetchall()
    finally:
        con.close()


def _rows(table: Any) -> list[tuple]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row.values()) for row in table.to_pylist()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(".bench/many_runs"))
    p.add_argument("--rebuild", action="store_true")
    a = p.parse_args()
    root = a.out.resolve()
    if a.rebuild:
        shutil.rmtree(root, ignore_errors=True)
    build(root, a.runs, a.steps)
    store_dir, art_dir = root / "store", root / "art"
    figures: list[tuple[str, str]] = []

    # 1. listing (after one call: the first imports what listing needs)
    art.open_store(store_dir).runs()
    ours = _ms(lambda: art.open_store(store_dir).runs(), a.repeats)
    walk = _ms(lambda: registry.walk(art.open_store(store_dir).location), a.repeats)
    theirs = _ms(lambda: sorted(glob.glob(str(art_dir / "*" / "models" / "*") + os.sep)), a.repeats)
    assert len(art.open_store(store_dir).runs()) == a.runs == len(glob.glob(str(art_dir / "*" / "models" / "*")))
    figures += [("`open_store().runs()` (one scan of the registry)", f"{ours:.1f} ms"),
                ("ART: glob of `{project}/models/{name}/`", f"{theirs:.1f} ms"),
                ("ratio `runs()` / ART's glob", f"{ours / theirs:.2f}x (target <= 2x)"),
                ("(the walk of the store's folders, as before the registry)", f"{walk:.1f} ms")]

    # 2. the command line, with artstore's bytecode compiled (as an installed package has it)
    env = {**os.environ, "LANCE_LOG": "error"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(art.__file__).parent)], check=True,
                   stdout=subprocess.DEVNULL)
    cli, cli_cpu = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "artstore", "runs", "--store", str(store_dir), "--format", "csv"],
                             check=True, capture_output=True, env=env, text=True).stdout
        cli.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    assert len(out.splitlines()) == a.runs + 1, out[:500]
    start = _ms(lambda: subprocess.run([sys.executable, "-c", "import artstore.cli"], check=True, env=env), 3)
    figures += [("`artstore runs` (a fresh process, wall, median of 3)", f"{1000 * statistics.median(cli):.0f} ms "
                 "(target < 1,000)"),
                ("its CPU time (user + system: what an idle machine's wall clock would show, near enough)",
                 f"{1000 * statistics.median(cli_cpu):.0f} ms"),
                ("of which starting Python and importing `artstore.cli`", f"{start:.0f} ms")]

    # 3. the cross-run aggregate
    expected = _art_aggregate(root)
    kept = art.open_store(store_dir)
    result = kept.sql(AGGREGATE)
    assert _rows(result) == [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in expected]
    fresh, warm, duck, imports, duck_fresh, duck_imports = [], [], [], [], [], []  # (wall ms, CPU ms)
    for _ in range(a.repeats):  # interleaved, so that load drifts hit each alike
        for script, arg, into, imported in ((FIRST_QUERY, store_dir, fresh, imports),
                                            (DUCK_FIRST, root, duck_fresh, duck_imports)):
            out = subprocess.run([sys.executable, "-c", script, str(arg)], check=True, env=env,
                                 capture_output=True, text=True).stdout.split()
            imported.append((float(out[0]), float(out[1])))
            into.append((float(out[2]), float(out[3])))
        for fn, into in ((lambda: kept.sql(AGGREGATE), warm), (lambda: _art_aggregate(root), duck)):
            t, c = time.perf_counter(), _cpu()
            fn()
            into.append((1000 * (time.perf_counter() - t), 1000 * (_cpu() - c)))
    (first, first_cpu), (later, later_cpu), (theirs, theirs_cpu), (imp, imp_cpu), (dfirst, dfirst_cpu), \
        (dimp, dimp_cpu) = (tuple(statistics.median(x[i] for x in xs) for i in (0, 1))
                            for xs in (fresh, warm, duck, imports, duck_fresh, duck_imports))
    figures += [(f"cross-run aggregate ({a.runs} runs x {a.steps} steps): `Store.sql`, first query of a fresh process "
                 "(its modules imported first)", f"{first:.0f} ms (CPU {first_cpu:.0f} ms)"),
                ("its imports (`artstore.read.sql`: duckdb, pyarrow.dataset, lance)",
                 f"{imp:.0f} ms (CPU {imp_cpu:.0f} ms)"),
                ("DuckDB over ART's files in a fresh process: the query / `import duckdb`",
                 f"{dfirst:.0f} ms (CPU {dfirst_cpu:.0f} ms) / {dimp:.0f} ms (CPU {dimp_cpu:.0f} ms)"),
                ("ratio fresh process / DuckDB fresh process, imports included: wall (CPU)",
                 f"{(first + imp) / (dfirst + dimp):.2f}x ({(first_cpu + imp_cpu) / (dfirst_cpu + dimp_cpu):.2f}x)"),
                ("the same, later queries of a Store kept open (datasets and decoded rows kept)",
                 f"{later:.0f} ms (CPU {later_cpu:.0f} ms)"),
                ("DuckDB over ART's parquet files (a fresh connection each time)",
                 f"{theirs:.0f} ms (CPU {theirs_cpu:.0f} ms)"),
                ("ratio first / DuckDB, kept open / DuckDB: wall (CPU)",
                 f"{first / theirs:.2f}x, {later / theirs:.2f}x ({first_cpu / theirs_cpu:.2f}x, "
                 f"{later_cpu / theirs_cpu:.2f}x) (target <= 0.5x)")]

    # 4. a query pinned to one run
    project, model = "proj3", "agent-0003"
    result = kept.sql(PINNED, [project, model])
    opened = sorted(versions_read(result))
    pinned = _ms(lambda: kept.sql(PINNED, [project, model]), a.repeats)
    pinned_fresh = _ms(lambda: art.open_store(store_dir).sql(PINNED, [project, model]), a.repeats)
    figures += [("a query pinned to one run: runs it opened", f"{len(opened)} ({', '.join(opened)})"),
                ("its time, a fresh Store / a Store kept open", f"{pinned_fresh:.0f} ms / {pinned:.0f} ms")]

    print(f"{a.runs} runs x {a.steps} steps (8 train + 8 val trajectories per step); medians of {a.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs\n")
    print("| what | measured |\n| --- | ---: |")
    for what, value in figures:
        print(f"| {what} | {value} |")


if __name__ == "__main__":
    main()
