"""Many runs in one store: listing them (``open_store().runs()``, read from the store's registry of
runs) against a glob over ART's folders, and ``artstore runs``.

    LANCE_LOG=error python -m benchmarks.many_runs [--runs 500] [--repeats 5]

artstore's side logs one small step (1 group of 8) into each of ``--runs`` runs. ART's side is the
folder layout openpipe-art 0.5.23 leaves (``{project}/models/{name}/`` with ``history.jsonl``,
``model.json``, ``state.json`` and ``trajectories/train/0000.parquet``, as small files): listing
runs there is a glob of those folders, whose cost depends on the directory entries only.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import artstore as art
from artstore.log import registry
from benchmarks.log_hot_path import tool_call_trajectory


def _ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="many-runs-") as tmp:
        store_dir, art_dir = Path(tmp) / "store", Path(tmp) / "art"
        t = time.perf_counter()
        for i in range(a.runs):
            project, name = f"proj{i % 10}", f"agent-{i:04d}"
            art.Model(name=name, project=project, base_path=str(store_dir), report_metrics=[]).log_sync(
                art.TrajectoryGroup([tool_call_trajectory(i, j) for j in range(8)]), split="train", step=0)
            run_dir = art_dir / project / "models" / name
            (run_dir / "trajectories" / "train").mkdir(parents=True)
            for f in ("history.jsonl", "model.json", "state.json", "trajectories/train/0000.parquet"):
                (run_dir / f).write_text("{}")
        print(f"{a.runs} runs logged in {time.perf_counter() - t:.0f} s")
        ours = _ms(lambda: art.open_store(store_dir).runs(), a.repeats)
        walk = _ms(lambda: registry.walk(art.open_store(store_dir).location), a.repeats)
        theirs = _ms(lambda: sorted(glob.glob(str(art_dir / "*" / "models" / "*") + os.sep)), a.repeats)
        assert len(art.open_store(store_dir).runs()) == a.runs
        cli = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "artstore", "runs", "--store", str(store_dir), "--format", "csv"],
                           check=True, capture_output=True, env={**os.environ, "LANCE_LOG": "error"})
            cli.append(time.perf_counter() - t)
        start = _ms(lambda: subprocess.run([sys.executable, "-c", "import artstore.cli"], check=True), 3)
    print("| what | ms |\n| --- | ---: |")
    print(f"| open_store().runs() (registry) | {ours:.1f} |")
    print(f"| the same by walking the store's folders (before the registry) | {walk:.1f} |")
    print(f"| ART: glob of {{project}}/models/{{name}}/ | {theirs:.1f} |")
    print(f"| ratio runs() / ART glob | {ours / theirs:.2f}x |")
    print(f"| `artstore runs` (a fresh process, median of 3) | {1000 * statistics.median(cli):.0f} |")
    print(f"| of which starting Python and importing artstore.cli | {start:.0f} |")


if __name__ == "__main__":
    main()
