"""Growth: small logs over a long run, artstore beside OpenPipe ART 0.5.23, at checkpoints.

Each step logs a small train step (1 group of 8 trajectories) and a val eval (1 group of 8) on
both sides (the drivers of ``make bench``: one process each, the same synthetic data, only the
library call timed, the sides alternating who goes first). At each checkpoint step it records,
per side: the median latency of the train and the val logs of the last ``--window`` steps, the
CPU per log of the driver process over them (every thread: background work included; the
harness's own building of the data left out: less sensitive to the machine's load than latency),
``history()`` and reading the checkpoint's train step back (``--repeats`` each, median; and the
first of them, right after the step's logs, apart), and the files and bytes of the run folder.
The growth column is last checkpoint / first.

Upkeep is never hidden: at each checkpoint artstore's backlog (journal rows not yet folded into
every data table, fragments and manifests per table, pending files) and its files and bytes are
taken as the logs left them; then the run settles (its queued logs land and the upkeep they asked
for finishes: ``Run.wait_for_upkeep``, timed) and files and bytes are taken again. A backlog that
grows from checkpoint to checkpoint, or a settle time that does, is upkeep falling behind the
logs. ``--settle-every N`` also settles every N steps (untimed), as a real run's minutes between
steps would. At ``--mark-step`` the run's latest version is noted with its history; every later
checkpoint reads ``history(as_of=that version)`` and checks it is the same table (time travel).

    LANCE_LOG=error python -m benchmarks.growth [--steps 3000] [--checkpoints 100,1000,3000]
        [--window 50] [--repeats 5] [--retention-s SECONDS] [--reader-window-s SECONDS]
        [--commit sync|group] [--settle-every N] [--mark-step 50] [--json out.json]

``--commit`` sets ARTSTORE_COMMIT for artstore's side: ``group`` (the default mode,
`artstore.log.group_commit`: log() returns once its row is durable, and the reads that follow wait
for its commit) or ``sync`` (each log() makes its own Lance commit).

The machine is shared: read the ratios (measured in the same run), not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.art_client import ArtDriver, DriverProcess, StoreDriver

TRAIN = {"n_groups": 1, "group_size": 8, "seed": 3}
VAL = {"n_groups": 1, "group_size": 8, "seed": 4}


def _median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs)


def _cpu_per_log(samples: list[tuple[int, float, float]], after: int) -> float:
    """ms of CPU per log of the driver process, every thread (the log call and the background
    work it leaves: group commit, fold, compaction, cleanup), less the harness's own (building the
    data), over the logs of the steps after `after`; from log to log within them, so nothing
    run between steps (a mark, a settle) counts."""
    w = [s for s in samples if s[0] > after]
    return 1000 * ((w[-1][1] - w[0][1]) - (w[-1][2] - w[0][2])) / (len(w) - 1)


def run(steps: int, checkpoints: list[int], window: int, repeats: int, retention_s: float | None,
        reader_window_s: float | None = None, commit: str = "group", settle_every: int = 0,
        mark_step: int = 50) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="growth-"))
    art = ArtDriver(base / "art", "bench", "agent")
    store = StoreDriver(base / "store", "bench", "agent", init=False, env={"ARTSTORE_COMMIT": commit})
    store.init(base_path=str(base / "store"), project="bench", name="agent",
               **({} if retention_s is None else {"retention_s": retention_s}),
               **({} if reader_window_s is None else {"reader_window_s": reader_window_s}))
    drivers: list[DriverProcess] = [art, store]
    for d in drivers:
        d.warmup()
    lat: dict[tuple[str, str], list[tuple[int, float]]] = {}
    out: dict[str, Any] = {"steps": steps, "checkpoints": {}, "retention_s": retention_s,
                           "reader_window_s": reader_window_s, "commit": commit,
                           "settle_every": settle_every, "mark_step": mark_step}
    mark: dict[str, Any] | None = None
    cpu: dict[str, list[tuple[int, float, float]]] = {}  # side -> (step, process CPU, harness CPU) after each log
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            order = drivers if step % 2 == 0 else drivers[::-1]
            for d in order:
                for split, spec in (("train", TRAIN), ("val", VAL)):
                    answer = d.log(step, split, synthetic=spec)
                    lat.setdefault((d.side, split), []).append((step, answer["seconds"]))
                    cpu.setdefault(d.side, []).append((step, answer["cpu"], answer["harness_cpu"]))
            if step == mark_step:
                mark = store.call("mark")
                mark.pop("seconds", None)
            elif settle_every and step % settle_every == 0 and step not in checkpoints:
                store.call("settle")
            if step in checkpoints:
                at: dict[str, Any] = {}
                for d in drivers:
                    at[d.side] = {
                        split: _median_ms([s for k, s in lat[(d.side, split)] if k > step - window])
                        for split in ("train", "val")}
                    at[d.side]["cpu_per_log"] = _cpu_per_log(cpu[d.side], step - window)
                for i in range(repeats):
                    for d in (drivers if i % 2 == 0 else drivers[::-1]):
                        at[d.side].setdefault("history", []).append(d.history()["seconds"])
                        answer = d.read_step(step, "train")
                        assert answer["n_trajectories"] == 8, answer
                        at[d.side].setdefault("read_step", []).append(answer["seconds"])
                if mark is not None:
                    travel = store.call("as_of_history", **{k: mark[k] for k in ("version", "rows", "digest")})
                    at["artstore"]["as_of_ms"] = 1000 * travel["seconds"]
                    at["artstore"]["as_of_rows"] = travel["rows"]
                at["artstore"]["backlog"] = {k: v for k, v in store.call("backlog").items() if k not in ("ok", "cmd", "id")}
                for d in drivers:
                    # the first read after the step's logs (a reader's cache is cold), then the median
                    at[d.side]["history_first"] = 1000 * at[d.side]["history"][0]
                    at[d.side]["read_step_first"] = 1000 * at[d.side]["read_step"][0]
                    at[d.side]["history"] = _median_ms(at[d.side]["history"])
                    at[d.side]["read_step"] = _median_ms(at[d.side]["read_step"])
                    disk = d.bytes_on_disk()
                    at[d.side]["files"] = disk["files"]
                    at[d.side]["bytes"] = disk["bytes"]
                at["artstore"]["settle_s"] = store.call("settle")["seconds"]
                disk = store.bytes_on_disk()
                at["artstore"]["files_settled"] = disk["files"]
                at["artstore"]["bytes_settled"] = disk["bytes"]
                at["artstore"]["parts"] = {k: [v, disk["files_parts"][k]] for k, v in disk["parts"].items()}
                at["ART"]["files_settled"], at["ART"]["bytes_settled"] = at["ART"]["files"], at["ART"]["bytes"]
                out["checkpoints"][step] = at
                print(f"step {step} ({time.perf_counter() - t0:.0f} s): " + json.dumps(at), flush=True)
    finally:
        for d in drivers:
            d.close()
        shutil.rmtree(base, ignore_errors=True)
    return out


def table(res: dict[str, Any]) -> str:
    cps = sorted(res["checkpoints"], key=int)
    head = "| at step | " + " | ".join(f"{int(c):,}" for c in cps) + " | growth (last/first) |"
    lines = [head, "| --- |" + " ---: |" * (len(cps) + 1)]

    def row(label: str, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> None:
        cells = []
        for c in cps:
            a, s = res["checkpoints"][c]["ART"][key] * scale, res["checkpoints"][c]["artstore"][key] * scale
            cells.append(f"{fmt.format(s)} / {fmt.format(a)} ({s / a:.2f}x)")
        first, last = res["checkpoints"][cps[0]]["artstore"][key], res["checkpoints"][cps[-1]]["artstore"][key]
        a_first, a_last = res["checkpoints"][cps[0]]["ART"][key], res["checkpoints"][cps[-1]]["ART"][key]
        lines.append(f"| {label}, artstore / ART | " + " | ".join(cells)
                     + f" | {last / first:.2f} / {a_last / a_first:.2f} |")

    row("small train log (ms)", "train")
    row("small val log (ms)", "val")
    row("CPU per log, background included (ms)", "cpu_per_log")
    row("history() (ms)", "history")
    row("read a step (8) (ms)", "read_step")
    if all("history_first" in res["checkpoints"][c]["artstore"] for c in cps):
        row("history(), first after the logs (ms)", "history_first")
        row("read a step, first after the logs (ms)", "read_step_first")
    row("files, as the logs left them", "files", fmt="{:,.0f}")
    row("bytes (MiB), as the logs left them", "bytes", 1 / 2**20, "{:.1f}")
    row("files, upkeep settled", "files_settled", fmt="{:,.0f}")
    row("bytes (MiB), upkeep settled", "bytes_settled", 1 / 2**20, "{:.1f}")
    side = [res["checkpoints"][c]["artstore"] for c in cps]
    lines.append("| artstore: settle (s) / journal rows unfolded / logs fragments / logs manifests | "
                 + " | ".join(f"{a['settle_s']:.2f} / {a['backlog']['unfolded']} / {a['backlog']['fragments'].get('logs')}"
                              f" / {a['backlog']['manifests'].get('logs')}" for a in side) + " | |")
    if all("as_of_ms" in a for a in side):
        lines.append(f"| artstore: history(as_of=step {res.get('mark_step')}'s version) (ms), rows | "
                     + " | ".join(f"{a['as_of_ms']:.1f}, {a['as_of_rows']}" for a in side) + " | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--checkpoints", default="100,1000,3000")
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--retention-s", type=float, default=None, help="artstore's version window (default 7 days)")
    p.add_argument("--reader-window-s", type=float, default=None,
                   help="how long a journal run keeps physical versions (default 60 s)")
    p.add_argument("--commit", choices=["sync", "group"], default="group", help="artstore's commit mode")
    p.add_argument("--settle-every", type=int, default=0,
                   help="also let artstore's upkeep settle every N steps (untimed; 0: at checkpoints only)")
    p.add_argument("--mark-step", type=int, default=50, help="the step whose version time travel reads back")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    res = run(a.steps, [int(c) for c in a.checkpoints.split(",")], a.window, a.repeats, a.retention_s, a.reader_window_s,
              a.commit, a.settle_every, a.mark_step)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(table(res))


if __name__ == "__main__":
    main()
