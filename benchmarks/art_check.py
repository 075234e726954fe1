"""Quick check of ART's benchmark side: log a few steps through the driver, time every command.

    python -m benchmarks.art_check [--steps 3] [--trajectories 512] [--repeats 5]

Creates ``.bench/art-venv`` on first use (network), logs ``--steps`` train steps of
``--trajectories`` rollouts (groups of 16) plus a val eval of a quarter of that size at each step,
then times each read command ``--repeats`` times. It checks the answers against the synthetic
data's ground truth (trajectory counts, mean rewards, tool-call failures) and prints a table of
median and min seconds per command. Not a pytest test: it needs network the first time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from typing import Any

from benchmarks.art_client import ArtDriver
from benchmarks.art_env import REPO_ROOT, ensure_art_env, env_info
from benchmarks.synthetic import count_trajectories, make_step, tool_call_stats

GROUP_SIZE = 16
TRAIN_SEED, VAL_SEED = 0, 1


def _specs(steps: int, n_traj: int) -> list[tuple[int, str, dict[str, Any]]]:
    n_val = max(1, n_traj // 4 // GROUP_SIZE)
    out = []
    for step in range(1, steps + 1):
        out.append((step, "train", {"n_groups": n_traj // GROUP_SIZE, "group_size": GROUP_SIZE,
                                    "seed": TRAIN_SEED}))
        out.append((step, "val", {"n_groups": n_val, "group_size": GROUP_SIZE,
                                  "seed": VAL_SEED}))
    return out


def _expected(specs: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """Ground truth from regenerating the same data on this side."""
    rewards: dict[tuple[str, int], list[float]] = {}
    calls = failed = 0
    for step, split, spec in specs:
        groups = make_step(step, spec["n_groups"], spec["group_size"], spec["seed"])
        rewards[(split, step)] = [t["reward"] for g in groups for t in g["trajectories"]]
        c, f = tool_call_stats(groups)
        calls, failed = calls + c, failed + f
        assert count_trajectories(groups) == spec["n_groups"] * spec["group_size"]
    return {"mean_reward": {k: sum(v) / len(v) for k, v in rewards.items()},
            "tool_calls": calls, "failed": failed}


def _record(results: dict[str, list[float]], name: str, answer: dict[str, Any]) -> dict[str, Any]:
    results.setdefault(name, []).append(answer["seconds"])
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    reused = env_info() is not None
    python = ensure_art_env()
    info = env_info() or {}
    print(f"ART venv: {python} ({'reused' if reused else 'created'}; install "
          f"{info.get('install_seconds')} s, {info.get('size_bytes', 0) / 2**20:.0f} MiB, "
          f"{info.get('versions')})")

    base = REPO_ROOT / ".bench" / "art-check"
    shutil.rmtree(base, ignore_errors=True)
    specs = _specs(args.steps, args.trajectories)
    expected = _expected(specs)
    results: dict[str, list[float]] = {}

    t = time.perf_counter()
    with ArtDriver(base, project="bench", name="agent-001", python=python) as art:
        print(f"driver: openpipe-art {art.art_version}, Python {art.python_version}, "
              f"imports {art.start_seconds:.2f} s, start+init {time.perf_counter() - t:.2f} s")
        print(f"warmup (first-call costs, scratch model): {art.warmup()['seconds']:.2f} s")

        for step, split, spec in specs:
            answer = _record(results, f"log {split} ({spec['n_groups'] * GROUP_SIZE} traj)",
                            art.log(step, split, synthetic=spec))
            results.setdefault(f"  build ART objects ({split})", []).append(
                answer["build_seconds"])
            assert answer["n_trajectories"] == spec["n_groups"] * GROUP_SIZE

        for _ in range(args.repeats):
            for step in range(1, args.steps + 1):
                answer = _record(results, f"read_step train ({args.trajectories} traj)",
                                art.read_step(step, "train"))
                assert answer["n_trajectories"] == args.trajectories
                want = expected["mean_reward"][("train", step)]
                assert abs(answer["mean_reward"] - want) < 1e-9, (answer, want)
            _record(results, "history (polars read_ndjson)", art.history())
            best = _record(results, "best_checkpoint (delete_checkpoints)",
                           art.best_checkpoint())
            results.setdefault("  best-step query alone", []).append(best["best_step_seconds"])
            for engine in ("art_loader", "duckdb"):
                answer = _record(results, f"analytics mean reward/step ({engine})",
                                art.analytics(engine))
                got = {(r[0], r[1]): r[2] for r in answer["rows"]}
                assert got.keys() == expected["mean_reward"].keys(), got
                assert all(abs(got[k] - v) < 1e-9 for k, v in expected["mean_reward"].items())
            answer = _record(results, "tool_failure_rate (duckdb)", art.tool_failure_rate())
            assert (answer["tool_calls"], answer["failed"]) == (
                expected["tool_calls"], expected["failed"]), answer
        disk = _record(results, "bytes_on_disk", art.bytes_on_disk())

    print(f"\n{'command':48s} {'n':>3s} {'median s':>10s} {'min s':>10s}")
    for name, values in results.items():
        print(f"{name:48s} {len(values):3d} {statistics.median(values):10.4f} "
              f"{min(values):10.4f}")
    print(f"\nbest step {best['best_step']}, keep {best['steps_to_keep']}, "
          f"would delete {best['would_delete']}")
    print(f"tool-call failure rate {expected['failed'] / expected['tool_calls']:.4f} "
          f"({expected['failed']}/{expected['tool_calls']})")
    parts = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(disk["parts"].items()))
    print(f"bytes on disk: {disk['bytes'] / 2**20:.2f} MiB in {disk['files']} files ({parts})")


if __name__ == "__main__":
    main()
