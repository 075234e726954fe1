"""Simulate log()'s maintenance over many small appends, with Lance's compaction planner modelled
by `compaction.after_compaction` (tests/test_small_appends.py holds that model to Lance). Prints, per
policy, how often each row is rewritten, the most small fragments a reader meets, and how many
compactions ran. Fast: no Lance calls. It reproduced a real 2,000-log run exactly (561
compactions per table, each row rewritten 14.5 times, for tiers of 16 down to 6 fragments).

    python -m benchmarks.compaction_policy [--appends 2000 10000] [--rows 8 1]
    # the policy before tiers (one target, compact past 24 fragments, every 16th version):
    python -m benchmarks.compaction_policy --tier-factor 1000000000 --compact-to 0 --compact-after 24 --every 16
"""

from __future__ import annotations

import argparse
import itertools

from artstore.log import inline_upkeep
from artstore.storage import compaction


def rewritten_rows(rows: list[int], target: int) -> int:
    """Rows in the runs of two or more adjacent fragments under `target` (what Lance rewrites)."""
    total, run = 0, []
    for r in [*rows, None]:
        if r is not None and r < target:
            run.append(r)
            continue
        total += sum(run) if len(run) > 1 else 0
        run = []
    return total


def simulate(appends: int, rows: int, top: int) -> tuple[float, int, int]:
    """(rows rewritten per row written, most fragments under `top`, compactions) after
    `appends` appends of `rows` rows, maintenance as in log(): checked when a version is a
    multiple of MAINTAIN_EVERY; a compaction makes two versions (reserve ids, rewrite)."""
    frags: list[int] = []
    rewritten = worst = compactions = version = 0
    for _ in range(appends):
        frags.append(rows)
        version += 1
        worst = max(worst, sum(r < top for r in frags))
        if version % inline_upkeep.MAINTAIN_EVERY:
            continue
        target = compaction.compaction_target(frags, top)
        if target is not None:
            rewritten += rewritten_rows(frags, target)
            frags = compaction.after_compaction(frags, target)
            compactions, version = compactions + 1, version + 2
    return rewritten / (appends * rows), worst, compactions


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--appends", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--rows", type=int, nargs="+", default=[8, 1])
    p.add_argument("--tier-factor", type=int, nargs="+", default=[compaction.TIER_FACTOR])
    p.add_argument("--compact-to", type=int, nargs="+", default=[compaction.COMPACT_TO_FRAGMENTS])
    p.add_argument("--compact-after", type=int, default=compaction.COMPACT_AFTER_FRAGMENTS)
    p.add_argument("--every", type=int, default=inline_upkeep.MAINTAIN_EVERY, help="maintenance every N versions")
    a = p.parse_args()
    compaction.COMPACT_AFTER_FRAGMENTS, inline_upkeep.MAINTAIN_EVERY = a.compact_after, a.every
    for tf, keep in itertools.product(a.tier_factor, a.compact_to):
        compaction.TIER_FACTOR, compaction.COMPACT_TO_FRAGMENTS = tf, keep
        for rows, n in itertools.product(a.rows, a.appends):
            top = compaction.TARGET_ROWS["trajectories"] if rows > 1 else compaction.TARGET_ROWS["logs"]
            amp, worst, comps = simulate(n, rows, top)
            print(f"tiers x{tf:<3d} down to {keep} fragments, {n:6d} appends of {rows} rows: each row rewritten "
                  f"{amp:5.1f} times, at most {worst:2d} small fragments, {comps:5d} compactions")


if __name__ == "__main__":
    main()
