"""Metrics computed from the groups of one log() call: pure functions, ART's names.

For split `s`: `s/reward`, `s/exception_rate`, `s/reward_std_dev`, `s/<k>` for each trajectory
metric, `s/group_metric_<k>` for each group metric, `s/data/step_num_*` counts, then the caller's
extra metrics (a bare key `k` becomes `s/k`; a key holding `/` is kept as given). NaN values are
dropped, as ART drops them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from artstore.records.trajectory import TrajectoryGroup


def _mean(values: Sequence[float]) -> float:
    """Exact-sum mean. Never raises on odd values (a huge or, when allowed, infinite reward must
    not fail a log): a sum that overflows is scaled first; inf with -inf gives NaN (dropped)."""
    try:
        return math.fsum(values) / len(values)
    except OverflowError:
        return math.fsum(v / len(values) for v in values)
    except ValueError:  # inf and -inf
        return math.nan


def _population_std(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.sqrt(_mean([(v - mean) * (v - mean) for v in values]))  # inf, not OverflowError


def _means_by_key(dicts: Sequence[Mapping[str, float | int | bool]]) -> dict[str, float]:
    """Mean of each key over the dicts that have it (booleans count as 0/1)."""
    sums: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for k, v in d.items():
            sums[k].append(float(v))
    return {k: _mean(vs) for k, vs in sums.items()}


def prefixed(name: str, split: str) -> str:
    """ART's naming: `split/name`, except names already holding a `/` (e.g. `loss/train`)."""
    return name if "/" in name or not split else f"{split}/{name}"


def compute_metrics(
    groups: Sequence[TrajectoryGroup],
    split: str,
    extra: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """All metrics of one log call, in ART's order, NaN dropped."""
    trajectories = [t for g in groups for t in g.trajectories]
    n_exceptions = sum(len(g.exceptions) for g in groups)
    out: dict[str, float] = {}
    if trajectories:
        out["reward"] = _mean([t.reward for t in trajectories])
    if trajectories or n_exceptions:
        out["exception_rate"] = n_exceptions / (len(trajectories) + n_exceptions)
    if groups:
        stds = [_population_std([t.reward for t in g.trajectories]) for g in groups if len(g.trajectories) > 1]
        out["reward_std_dev"] = _mean(stds) if stds else 0.0
    out.update(_means_by_key([t.metrics for t in trajectories]))
    out.update({f"group_metric_{k}": v for k, v in _means_by_key([g.metrics for g in groups]).items()})
    if groups:
        out["data/step_num_scenarios"] = float(len(groups))
        out["data/step_num_trajectories"] = float(len(trajectories))
        out["data/step_num_groups_submitted"] = float(len(groups))
        out["data/step_num_groups_trainable"] = float(
            sum(1 for g in groups if len({t.reward for t in g.trajectories}) > 1)
        )
    named = {f"{split}/{k}" if split else k: v for k, v in out.items()}
    for k, v in (extra or {}).items():
        named[prefixed(k, split)] = float(v)
    return {k: v for k, v in named.items() if not math.isnan(v)}
