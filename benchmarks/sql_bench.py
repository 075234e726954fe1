"""SQL over runs: artstore's `Store.sql` against DuckDB over the same runs in ART's files.

    python -m benchmarks.sql_bench [--runs 100 --steps 100 --per-step 100] [--reps 7]

Builds once (kept under --out, default .bench/sql/) RUNS runs x STEPS steps x PER_STEP train
trajectories (plus a small val log per step) of tool-calling email-search rollouts, written twice:
through artstore's public `Model.log` (one train and one val log per step per run), and ART's way
(`trajectories/{split}/{step:04d}.parquet` with ART's columns, and `history.jsonl`). Then times three
questions, each answered by `Store.sql` and by DuckDB over the ART files, checks that both give the
same answer, and prints median wall and CPU times (and the first call) side by side:

  (a) mean train reward per step per run (every run)
  (b) the best step of one run by val/reward
  (c) tool-call failure rate per step per run: tool messages whose content starts with "ERROR"

The first measurement is of the store as `Model.log` left it (the core compacts a table only now
and then); then every run is compacted (`artstore compact --all`) and measured again. A later
invocation finds the store compacted and measures that only (--rebuild starts over). With --results
FILE (default benchmarks/RESULTS.md) the figures, the command and the machine are written into that
file's section for this benchmark.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.results_file import write_section

TOOLS = ("search_inbox", "read_email", "list_folders", "send_reply")
_POOLS: dict[int, list] = {}  # per worker process: rollout pools by seed


# -- data ------------------------------------------------------------------------------------
def _pool(rng: random.Random, size: int) -> list[tuple[Any, list[dict], str]]:
    """`size` distinct rollouts: (artstore Trajectory, ART message rows, tools JSON)."""
    import artstore as art

    tools = [{"type": "function", "function": {"name": n, "description": f"{n} tool",
                                               "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
             for n in TOOLS]
    out = []
    for i in range(size):
        items: list[Any] = [
            {"role": "system", "content": "You are an email assistant. Use the tools to find answers."},
            {"role": "user", "content": f"When is the offsite for project {i}, and who organises it?"},
        ]
        art_rows = [{"role": m["role"], "content": m["content"], "tool_calls": None, "tool_call_id": None,
                     "trainable": False} for m in items]
        for turn in range(rng.randint(1, 4)):
            name, cid = rng.choice(TOOLS), f"call_{i}_{turn}"
            calls = [{"id": cid, "type": "function",
                      "function": {"name": name, "arguments": json.dumps({"query": f"offsite {i}", "limit": 5})}}]
            items.append(art.Choice(finish_reason="tool_calls", index=0,
                                    message={"role": "assistant", "content": None, "tool_calls": calls}))
            art_rows.append({"role": "assistant", "content": None, "tool_calls": json.dumps(calls),
                             "tool_call_id": None, "trainable": True})
            if rng.random() < 0.15:
                content = f"ERROR: {name} failed: upstream timed out after 30s"
            else:
                content = json.dumps([{"email_id": f"e{i}-{k}", "subject": f"Offsite planning {k}",
                                       "snippet": "Hi all, the offsite will be held at the lake house. " * 2}
                                      for k in range(rng.randint(1, 3))])
            items.append({"role": "tool", "tool_call_id": cid, "content": content})
            art_rows.append({"role": "tool", "content": content, "tool_calls": None, "tool_call_id": cid,
                             "trainable": False})
        answer = f"The offsite is on day {rng.randint(1, 28)}; Dana organises it."
        items.append(art.Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": answer}))
        art_rows.append({"role": "assistant", "content": answer, "tool_calls": None, "tool_call_id": None,
                         "trainable": True})
        traj = art.Trajectory(messages_and_choices=items, tools=tools, reward=0.0,
                              metrics={"num_turns": len(items), "correct": False},
                              metadata={"scenario_id": f"s-{i:05d}"}, logs=[f"rollout {i}"])
        out.append((traj, art_rows, json.dumps(tools)))
    return out


def _art_table(groups: list[list[tuple[Any, list[dict], str]]], rewards: list[list[float]]) -> Any:
    """ART's parquet rows (its PR-era columns) for groups of pool items with these rewards."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.string()),
                         ("tool_call_id", pa.string()), ("trainable", pa.bool_())])
    schema = pa.schema([("group_index", pa.int64()), ("group_metadata", pa.string()), ("group_metrics", pa.string()),
                        ("group_logs", pa.list_(pa.string())), ("reward", pa.float64()), ("metrics", pa.string()),
                        ("metadata", pa.string()), ("tools", pa.string()), ("logs", pa.list_(pa.string())),
                        ("messages", pa.list_(message))])
    rows = []
    for gi, (group, rs) in enumerate(zip(groups, rewards, strict=True)):
        for (traj, art_rows, tools), r in zip(group, rs, strict=True):
            rows.append({"group_index": gi, "group_metadata": "{}", "group_metrics": "{}", "group_logs": [],
                         "reward": r, "metrics": json.dumps({**traj.metrics, "correct": r > 0.5}),
                         "metadata": json.dumps(traj.metadata), "tools": tools, "logs": traj.logs,
                         "messages": art_rows})
    return pa.Table.from_pylist(rows, schema=schema)


def _build_run(args: tuple[str, int, int, int, int]) -> float:
    """Write run `r` both ways; returns seconds spent in Model.log."""
    root, r, steps, per_step, val_per_step = args
    import pyarrow.parquet as pq

    import artstore as art

    rng = random.Random(r)
    seed = r % 8
    pool = _POOLS.get(seed) or _POOLS.setdefault(seed, _pool(random.Random(10_000 + seed), 512))
    model = art.Model(name=f"agent-{r:03d}", project="email-search", base_path=f"{root}/artstore", report_metrics=[])
    art_dir = Path(root, "art", "email-search", "models", model.name)
    skill = rng.uniform(-0.2, 0.2)
    logged = 0.0
    history = []
    for step in range(steps):
        for split, n in (("train", per_step), ("val", val_per_step)):
            picks = [rng.choice(pool) for _ in range(n)]
            groups = [picks[i:i + 4] for i in range(0, n, 4)]
            mean = 0.3 + skill + 0.4 * step / max(steps - 1, 1)
            rewards = [[min(1.0, max(0.0, rng.gauss(mean, 0.25))) for _ in g] for g in groups]
            tgroups = [art.TrajectoryGroup([t.model_copy(update={"reward": x, "metrics": {**t.metrics, "correct": x > 0.5}})
                                            for (t, _, _), x in zip(g, rs, strict=True)])
                       for g, rs in zip(groups, rewards, strict=True)]
            t0 = time.perf_counter()
            record = model.log_sync(tgroups, split=split, step=step)
            logged += time.perf_counter() - t0
            path = art_dir / "trajectories" / split / f"{step:04d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_art_table(groups, rewards), path, compression="zstd")
            history.append({**record.metrics, "step": step, "recorded_at": record.recorded_at.isoformat()})
    (art_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return logged


def build(root: Path, runs: int, steps: int, per_step: int, val_per_step: int, workers: int) -> dict[str, Any]:
    """Write the store and the ART files under `root` (skipped when a finished build is there)."""
    marker = root / "built.json"
    if marker.exists():
        return json.loads(marker.read_text())
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = [(str(root), r, steps, per_step, val_per_step) for r in range(runs)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:  # Lance is not fork-safe
        done = 0
        logged = 0.0
        for seconds in pool.imap_unordered(_build_run, jobs):
            done += 1
            logged += seconds
            print(f"\r  built {done}/{runs} runs ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    info = {"runs": runs, "steps": steps, "per_step": per_step, "val_per_step": val_per_step, "workers": workers,
            "build_s": round(time.perf_counter() - t0, 1), "model_log_s": round(logged, 1),
            "log_calls": runs * steps * 2, "bytes_artstore": _du(root / "artstore"), "bytes_art": _du(root / "art")}
    marker.write_text(json.dumps(info, indent=1))
    return info


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())



# -- the questions -----------------------------------------------------------------------------
def questions(root: Path, run: str) -> list[tuple[str, str, list | None, str]]:
    """(name, artstore SQL, its params, DuckDB SQL over the ART files); each returns sorted rows."""
    art = root / "art"
    train = f"{art}/*/models/*/trajectories/train/*.parquet"
    project, model = run.split("/")
    by_file = """SELECT parts[-6] AS project, parts[-4] AS model,
                        CAST(replace(parts[-1], '.parquet', '') AS BIGINT) AS step, {cols}
                 FROM (SELECT string_split(filename, '/') AS parts, * FROM per_file) ORDER BY ALL"""
    return [
        ("(a) mean reward per step per run",
         "SELECT project, model, step, avg(reward) AS mean_reward FROM trajectories WHERE split = 'train' "
         "GROUP BY ALL ORDER BY ALL", None,
         f"WITH per_file AS (SELECT filename, avg(reward) AS mean_reward "
         f"FROM read_parquet('{train}', filename = true) GROUP BY filename) " + by_file.format(cols="mean_reward")),
        ("(b) best step of one run by val/reward",
         "SELECT step, value FROM metrics WHERE project = ? AND model = ? AND name = 'val/reward' "
         "ORDER BY value DESC LIMIT 1", [project, model],
         f"""SELECT step, "val/reward" AS value FROM read_json_auto('{art}/{project}/models/{model}/history.jsonl')
             WHERE "val/reward" IS NOT NULL ORDER BY value DESC LIMIT 1"""),
        ("(c) tool-call failure rate per step per run",
         "SELECT project, model, step, avg(CASE WHEN starts_with(content, 'ERROR') THEN 1.0 ELSE 0.0 END) "
         "AS failure_rate, count(*) AS tool_messages FROM messages WHERE role = 'tool' AND split = 'train' "
         "GROUP BY ALL ORDER BY ALL", None,
         f"""WITH per_file AS (
               SELECT filename, avg(CASE WHEN starts_with(m.content, 'ERROR') THEN 1.0 ELSE 0.0 END) AS failure_rate,
                      count(*) AS tool_messages
               FROM (SELECT filename, unnest(messages) AS m FROM read_parquet('{train}', filename = true))
               WHERE m.role = 'tool' GROUP BY filename) """ + by_file.format(cols="failure_rate, tool_messages")),
    ]


def _cpu() -> float:
    """CPU seconds of this process so far, every thread (Lance's and DuckDB's included)."""
    return time.process_time()


def _paired(ours: Any, theirs: Any, reps: int) -> dict[str, Any]:
    """Time two callables: a first call each, then `reps` calls alternating between them (so both
    see the same load on a shared machine). Medians of wall and CPU time, in seconds."""
    out: dict[str, Any] = {}
    for side, fn in (("artstore", ours), ("art", theirs)):
        t0 = time.perf_counter()
        out[f"{side}_rows"] = fn()
        out[f"{side}_first_s"] = time.perf_counter() - t0
    walls: dict[str, list[float]] = {"artstore": [], "art": []}
    cpus: dict[str, list[float]] = {"artstore": [], "art": []}
    for _ in range(reps):
        for side, fn in (("artstore", ours), ("art", theirs)):
            c0, t0 = _cpu(), time.perf_counter()
            fn()
            walls[side].append(time.perf_counter() - t0)
            cpus[side].append(_cpu() - c0)
    for side in walls:
        out[f"{side}_s"] = statistics.median(walls[side])
        out[f"{side}_cpu_s"] = statistics.median(cpus[side])
    return out


def _same(a: Any, b: Any) -> bool:
    ra, rb = a.to_pylist(), b.to_pylist()
    if len(ra) != len(rb):
        return False
    for x, y in zip(ra, rb, strict=True):
        for u, v in zip(x.values(), y.values(), strict=True):
            if isinstance(u, float) or isinstance(v, float):
                if abs(float(u) - float(v)) > 1e-9 * max(1.0, abs(float(u))):
                    return False
            elif u != v:
                return False
    return True


def fragments(root: Path) -> float:
    """Mean fragment count of the trajectories tables (what compaction brings down)."""
    import artstore as art
    from artstore.storage import fragments

    store = art.open_store(root / "artstore")
    counts = [fragments.fragment_count(r.table_location("trajectories")) for r in store.runs()]
    return statistics.fmean(counts)


def measure(root: Path, runs: int, reps: int) -> dict[str, Any]:
    """Every question, both ways, in a fresh Store (its first query builds the catalog)."""
    import duckdb

    import artstore as art

    run = f"email-search/agent-{runs // 2:03d}"
    t0 = time.perf_counter()
    store = art.open_store(root / "artstore")
    store.sql("SELECT 1")  # the catalog: one DuckDB connection, every run's tables registered, the views
    setup = time.perf_counter() - t0
    con = duckdb.connect()
    out = []
    for name, ours, params, theirs in questions(root, run):
        r = _paired(lambda q=ours, p=params: store.sql(q, p), lambda q=theirs: con.sql(q).to_arrow_table(), reps)
        r.update(question=name, rows=r["artstore_rows"].num_rows, same_answer=_same(r.pop("artstore_rows"),
                                                                                    r.pop("art_rows")))
        out.append(r)
    return {"setup_s": setup, "results": out, "run": run, "fragments": fragments(root)}


def compact(root: Path) -> float:
    """`artstore compact --all`: returns seconds."""
    import artstore as art

    t0 = time.perf_counter()
    for run in art.open_store(root / "artstore").runs():
        run.compact()
    return time.perf_counter() - t0


def machine() -> str:
    import duckdb
    import lance
    import pyarrow

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    mem = ""
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; Python "
            f"{platform.python_version()}, duckdb {duckdb.__version__}, pylance {lance.__version__}, "
            f"pyarrow {pyarrow.__version__}; load average {load:.1f} at start")


def _table(measured: dict[str, Any]) -> list[str]:
    lines = [
        "| question | artstore first | artstore median (CPU) | ART files first | ART files median (CPU) "
        "| ART / artstore wall (CPU) | rows | same answer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in measured["results"]:
        lines.append(
            f"| {r['question']} | {r['artstore_first_s'] * 1000:,.0f} ms | {r['artstore_s'] * 1000:,.1f} ms "
            f"({r['artstore_cpu_s'] * 1000:,.0f}) | {r['art_first_s'] * 1000:,.0f} ms | {r['art_s'] * 1000:,.1f} ms "
            f"({r['art_cpu_s'] * 1000:,.0f}) | {r['art_s'] / r['artstore_s']:.2f}x "
            f"({r['art_cpu_s'] / max(r['artstore_cpu_s'], 1e-9):.2f}x) | {r['rows']:,} | "
            f"{'yes' if r['same_answer'] else 'NO'} |")
    return lines


def report(info: dict[str, Any], phases: list[tuple[str, dict[str, Any]]], command: str, reps: int) -> str:
    lines = [
        "## SQL over runs: `Store.sql` vs DuckDB over ART's files (`benchmarks/sql_bench.py`)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Data: {info['runs']} runs x {info['steps']} steps x {info['per_step']} train trajectories "
        f"(+{info['val_per_step']} val per step): "
        f"{info['runs'] * info['steps'] * (info['per_step'] + info['val_per_step']):,} tool-calling trajectories, "
        f"1-4 tool calls each, written through `Model.log` ({info['log_calls']:,} calls, one per split per step "
        f"per run; {info['model_log_s']:.0f} s inside `log` over {info['workers']} processes; the whole build, "
        f"ART files included, {info['build_s']:.0f} s). On disk: artstore {info['bytes_artstore'] / 2**20:,.0f} MiB "
        f"(every version inside the 7-day retention is kept), ART {info['bytes_art'] / 2**20:,.0f} MiB.",
        "",
        f"Each question once, then {reps} calls alternating between the two sides; medians of wall time, CPU time "
        "of the process in brackets (all threads; steadier than wall time on a shared machine). Both sides keep "
        "their DuckDB connection between calls. The first `Store.sql` of a process builds the catalog (DuckDB "
        "connection, every run's tables registered, the views); that is outside the figures and given per phase.",
    ]
    for title, m in phases:
        lines += ["", f"**{title}** (trajectories tables: {m['fragments']:.1f} fragments per run on average; "
                      f"catalog {m['setup_s'] * 1000:,.0f} ms; one run = `{m['run']}`)", ""]
        lines += _table(m)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sql_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--per-step", type=int, default=100)
    p.add_argument("--val-per-step", type=int, default=8)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes that build the data")
    p.add_argument("--out", default=".bench/sql", help="where the data is built (kept for the next run)")
    p.add_argument("--rebuild", action="store_true", help="build the data again")
    p.add_argument("--build-only", action="store_true", help="build the data, measure nothing")
    p.add_argument("--results", default="benchmarks/RESULTS.md", help="file to write the figures into ('' for none)")
    a = p.parse_args()
    root = Path(a.out) / f"{a.runs}x{a.steps}x{a.per_step}x{a.val_per_step}"
    if a.rebuild and (root / "built.json").exists():
        (root / "built.json").unlink()
    info = build(root, a.runs, a.steps, a.per_step, a.val_per_step, a.workers)
    if a.build_only:
        print(json.dumps(info))
        return
    phases = []
    if "compact_s" not in info:  # as Model.log left it: core's automatic compaction only
        phases.append(("As logged", measure(root, a.runs, a.reps)))
        info["compact_s"] = round(compact(root), 1)
        (root / "built.json").write_text(json.dumps(info, indent=1))
    phases.append((f"After `artstore compact --all` ({info['compact_s']:.0f} s)", measure(root, a.runs, a.reps)))
    command = ("python -m benchmarks.sql_bench " + " ".join(sys.argv[1:])).strip()
    text = report(info, phases, command, a.reps)
    print(text)
    if a.results:
        write_section(Path(a.results), "sql_bench", text)
    if not all(r["same_answer"] for _, m in phases for r in m["results"]):
        sys.exit("artstore and the ART files gave different answers")


if __name__ == "__main__":
    main()
