"""How long the `artstore` command takes to start, beside a bare Python in the same run.

    python -m benchmarks.cli_startup [--repeats 7] [--before DIR]

Times whole processes (wall clock, median of --repeats, the commands interleaved so load drifts
hit each alike): `python -c pass` (the floor), `import typer` (the floor of any typer command
line), `import artstore`, `artstore --help`, and `artstore runs` on a small store (2 runs of 3
logs, made by this script). With --before DIR, the same commands also run against the artstore
source tree in DIR (e.g. a checkout of an older commit) for a before/after figure.
Targets (issue 17): --help under 0.3 s and `runs` on a small store under 1 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKE_STORE = """
import sys, artstore as art
for name in ("a", "b"):
    m = art.Model(name=name, project="p", base_path=sys.argv[1], report_metrics=[])
    for step in range(3):
        m.log_sync(None, split="val", step=step, metrics={"reward": step / 3})
"""


def _time(argv: list[str], source: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process running `argv`."""
    env = {**os.environ, "PYTHONPATH": str(source), "LANCE_LOG": "error"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(argv, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=300)  # cwd too: `python -c` and `-m` put it before PYTHONPATH
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another artstore source tree to time the same way")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        subprocess.run([py, "-c", MAKE_STORE, store], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        cases = {
            "python -c pass": ([py, "-c", "pass"], ROOT),
            "python -c 'import typer'": ([py, "-c", "import typer"], ROOT),
            "python -c 'import artstore'": ([py, "-c", "import artstore"], ROOT),
            "artstore --help": ([py, "-m", "artstore", "--help"], ROOT),
            "artstore runs (2 runs)": ([py, "-m", "artstore", "runs", "--store", store], ROOT),
        }
        if args.before is not None:
            for name in ("python -c 'import artstore'", "artstore --help", "artstore runs (2 runs)"):
                cases[f"{name} [before]"] = (cases[name][0], args.before.resolve())
        for argv, source in cases.values():  # warm the file cache and write .pyc files
            _time(argv, source)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (argv, source) in cases.items():
                times[name].append(_time(argv, source))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base_wall = statistics.median(w for w, _ in times["python -c pass"])
    base_cpu = statistics.median(c for _, c in times["python -c pass"])
    print(f"{args.repeats} repeats; load average {load:.1f} at the end; {os.cpu_count()} CPUs. CPU = user + system "
          "seconds of the process (what an idle machine's wall clock would show, near enough).")
    print("| command | median wall s | min wall s | median CPU s | CPU / python -c pass |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"| `{name}` | {wall:.3f} | {min(w for w, _ in values):.3f} | {cpu:.3f} | {cpu / base_cpu:.1f}x |")
    print(f"(python -c pass: {base_wall:.3f} s wall)")


if __name__ == "__main__":
    main()
