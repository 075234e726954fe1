"""History after the writer's own logs: the first ``Run.history()`` after each stretch of small
logs, artstore beside OpenPipe ART 0.5.23 (and beside artstore at a base commit, from an exported
tree), in one run.

Each step logs a small train step and a val eval (8 trajectories each, as ``growth.py``) on every
side (the drivers of ``make bench``, one process each, the sides alternating who goes first). Every
``--every`` steps each side's ``history()`` is timed once right after its logs (the first read of
those logs: the figure issue 13 asks about) and once more (warm). Reported: the median of the first
reads over the steps of each stretch of ``--checkpoints``, and its ratio to ART's.

    LANCE_LOG=error python -m benchmarks.history_after_logs [--steps 300] [--every 20]
        [--checkpoints 100,300] [--base DIR] [--reader-window-s 0.5] [--commit sync|group]

``--base DIR``: a tree of artstore to compare with (e.g. ``git archive <commit> | tar -x -C DIR``);
its ``benchmarks/store_driver.py`` runs with this interpreter. ``--commit group`` runs both artstore
sides with ARTSTORE_COMMIT=group (`artstore.log.group_commit`). The machine is shared: read the
ratios, measured in the same run, not the milliseconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.art_client import ArtDriver, DriverProcess, StoreDriver
from benchmarks.growth import TRAIN, VAL


def _base_driver(tree: Path, base: Path, commit: str) -> DriverProcess:
    driver = DriverProcess(base, "bench", "agent", python=sys.executable, driver=tree / "benchmarks" / "store_driver.py",
                           init=False, env={"LANCE_LOG": "error", "ARTSTORE_COMMIT": commit})
    driver.side = "artstore (base)"  # type: ignore[attr-defined]
    return driver


def run(steps: int, every: int, checkpoints: list[int], base_tree: Path | None,
        reader_window_s: float | None, commit: str = "sync") -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="history-after-logs-"))
    drivers: list[Any] = [ArtDriver(root / "art", "bench", "agent"),
                          StoreDriver(root / "store", "bench", "agent", init=False, env={"ARTSTORE_COMMIT": commit})]
    if base_tree is not None:
        drivers.append(_base_driver(base_tree, root / "base", commit))
    extra = {} if reader_window_s is None else {"reader_window_s": reader_window_s}
    for d, folder in zip(drivers[1:], ("store", "base"), strict=False):
        d.init(base_path=str(root / folder), project="bench", name="agent", **extra)
    for d in drivers:
        d.warmup()
    first: dict[str, list[tuple[int, float]]] = {d.side: [] for d in drivers}
    warm: dict[str, list[float]] = {d.side: [] for d in drivers}
    try:
        for step in range(1, steps + 1):
            order = drivers[step % len(drivers):] + drivers[:step % len(drivers)]
            for d in order:
                d.log(step, "train", synthetic=TRAIN)
                d.log(step, "val", synthetic=VAL)
            if step % every == 0:
                for d in order:
                    first[d.side].append((step, 1000 * d.history()["seconds"]))
                    warm[d.side].append(1000 * d.history()["seconds"])
                print(f"step {step}: " + ", ".join(f"{s} {v[-1][1]:.1f} ms" for s, v in first.items()), flush=True)
    finally:
        for d in drivers:
            d.close()
        shutil.rmtree(root, ignore_errors=True)
    return {"first": first, "warm": warm, "checkpoints": checkpoints, "every": every, "commit": commit}


def table(res: dict[str, Any]) -> str:
    bounds = [0, *res["checkpoints"]]
    lines = ["| side | " + " | ".join(f"steps {a + 1}-{b}" for a, b in zip(bounds, bounds[1:], strict=False))
             + " | warm (all) |", "| --- |" + " ---: |" * len(bounds)]
    art = res["first"]["ART"]
    for side, samples in res["first"].items():
        cells = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            mine = statistics.median(ms for s, ms in samples if a < s <= b)
            theirs = statistics.median(ms for s, ms in art if a < s <= b)
            n = sum(1 for s, _ in samples if a < s <= b)
            cells.append(f"{mine:.1f} ms ({mine / theirs:.2f}x, n={n})")
        lines.append(f"| {side} | " + " | ".join(cells) + f" | {statistics.median(res['warm'][side]):.2f} ms |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--checkpoints", default="100,300")
    p.add_argument("--base", type=Path, default=None, help="an exported tree of artstore to compare with")
    p.add_argument("--reader-window-s", type=float, default=None)
    p.add_argument("--commit", choices=["sync", "group"], default="sync", help="artstore's commit mode (both trees)")
    a = p.parse_args()
    res = run(a.steps, a.every, [int(c) for c in a.checkpoints.split(",")], a.base, a.reader_window_s, a.commit)
    print(table(res))


if __name__ == "__main__":
    main()
