"""The history row of one log() call, computed as openpipe-art 0.5.23's `Model.log` computes it.

For split `s` and groups G (names as in `artstore.records.metric_names`):
- `s/<k>`: mean of each trajectory metric over the trajectories that have it (an unknown slash key
  `a/b` is `s/a/b`); `s/group/<k>`: mean of each group metric over the groups with trajectories;
- `s/reward` (mean over trajectories), `s/reward_std_dev` (mean over groups of 2+ trajectories of
  the population std of their rewards; 0 when none), `s/exception_rate` (exceptions over
  trajectories + exceptions);
- step counts: on train, unprefixed `data/step_num_scenarios`, `data/step_num_trajectories`
  (exceptions count), `data/step_num_groups_submitted`, `data/step_num_groups_trainable` (rewards
  vary), with their running sums `data/cum/num_*`; on val/test, `s/data/step_num_*` without the
  trainable count;
- the caller's `metrics=` (qualified as above); `costs/...`, `time/step_...`, `data/step_...` keys go
  through the metrics builder, which adds the cost rollups (`costs/<ctx>`, `costs/all`) and running
  sums (`costs/cum/*`, `time/cum/*`, `data/cum/*`);
- `training_step`: the step. NaN values are dropped, as ART drops them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from artstore.errors import ValidationError
from artstore.names import check_text
from artstore.records.metric_names import SPLITS, TRAINING_STEP, is_builder_managed, qualify
from artstore.records.metrics_builder import MetricsBuilder
from artstore.records.numbers import as_float
from artstore.records.trajectory import TrajectoryGroup


def check_extra(metrics: Mapping[str, float] | None) -> dict[str, float]:
    """The caller's `metrics=` as a dict, or ValidationError naming the bad entry."""
    out = dict(metrics or {})
    for k, v in out.items():
        if not isinstance(k, str) or not k:
            raise ValidationError("metrics", f"metric names must be non-empty strings, got {k!r}")
        check_text(f"metrics[{k!r}]", k)
        out[k] = as_float(f"metrics[{k!r}]", v)  # exact, or refused: never an OverflowError or a rounding
    return out


def builder_for_split(builder: MetricsBuilder, split: str) -> MetricsBuilder:
    """ART's cost context per split: train -> "train", val/test -> "eval", others -> the split."""
    if split == "train":
        return builder.for_cost_context("train", buffer_scope="train")
    if split in ("val", "test"):
        return builder.for_cost_context("eval", buffer_scope="eval")
    return builder.for_cost_context(split, buffer_scope=split)


def route(metrics: Mapping[str, float], builder: MetricsBuilder) -> dict[str, float]:
    """Send costs and builder-managed keys to `builder`; return the other metrics (floats)."""
    rest: dict[str, float] = {}
    for key, value in metrics.items():
        value = float(value)
        if key.startswith("costs/"):
            builder.add_cost(key.removeprefix("costs/"), value)
        elif key.startswith("costs_"):
            raise ValidationError(key, "legacy cost keys are not supported: log 'costs/train/<source>' "
                                       "or 'costs/eval/<source>' instead")
        elif is_builder_managed(key):
            builder.add_metric(key, value)
        else:
            rest[key] = value
    return rest


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)  # ART's plain sum: same rounding, inf/NaN pass through


def _std_dev(groups: Sequence[TrajectoryGroup]) -> float:
    with np.errstate(all="ignore"):  # huge or infinite rewards (when allowed) give inf/NaN, not warnings
        stds = [float(np.std([t.reward for t in g.trajectories])) for g in groups if len(g.trajectories) > 1]
    return _mean(stds) if stds else 0.0


def _scenario_id(group: TrajectoryGroup) -> str | None:
    for metadata in (group.metadata, *(t.metadata for t in group.trajectories)):
        if metadata.get("scenario_id") is not None:
            return str(metadata["scenario_id"])
    return None


def _trainable(group: TrajectoryGroup) -> bool:
    rewards = [t.reward for t in group.trajectories]
    return len(rewards) > 1 and any(abs(r - rewards[0]) > 1e-12 for r in rewards[1:])


def _step_counts(groups: Sequence[TrajectoryGroup], split: str, provided: set[str],
                 builder: MetricsBuilder) -> dict[str, float]:
    """The `data/step_num_*` counts: into the builder on train, `s/data/...` values on val/test."""
    if split not in SPLITS:
        return {}
    counts = {
        "data/step_num_scenarios": float(len(groups)),
        "data/step_num_trajectories": float(sum(len(g.trajectories) + len(g.exceptions) for g in groups)),
        "data/step_num_groups_submitted": float(len(groups)),
    }
    if split == "train":
        counts["data/step_num_groups_trainable"] = float(sum(1 for g in groups if _trainable(g)))
    missing = {k: v for k, v in counts.items() if k not in provided and f"{split}/{k}" not in provided}
    if split != "train":
        return {f"{split}/{k}": v for k, v in missing.items()}
    for k, v in missing.items():
        builder.add_metric(k, v)
    ids = list(dict.fromkeys(i for g in groups if (i := _scenario_id(g)) is not None))
    if ids:
        builder.add_data(scenario_ids=ids)
    return {}


def _group_values(groups: Sequence[TrajectoryGroup], split: str,
                  builder: MetricsBuilder) -> tuple[dict[str, float], dict[str, float]]:
    """(per-trajectory means incl. bare `reward`/`exception_rate`, per-group means)."""
    per_key: dict[str, list[float]] = {"reward": [], "exception_rate": []}
    group_keys: dict[str, list[float]] = {}
    for g in groups:
        own = {f"{split}/group/{k}": v for k, v in route(g.metrics, builder).items()} if g.metrics else {}
        if g.trajectories:
            for k, v in own.items():
                group_keys.setdefault(k, []).append(v)
        per_key["exception_rate"].extend([0.0] * len(g.trajectories) + [1.0] * len(g.exceptions))
        for t in g.trajectories:
            per_key["reward"].append(t.reward)
            for k, v in route(t.metrics, builder).items():
                per_key.setdefault(f"{split}/{k}", []).append(v)
    out = {k: _mean(v) for k, v in per_key.items() if v}
    return out, {k: _mean(v) for k, v in group_keys.items() if v}


def compute_metrics(
    groups: Sequence[TrajectoryGroup] | None,
    split: str,
    extra: Mapping[str, float] | None = None,
    *,
    step: int = 0,
    builder: MetricsBuilder | None = None,
) -> dict[str, float]:
    """The history row of one log call (see the module doc), in ART's column order; empty when
    there is nothing to log (no groups and no metrics). `groups=None`: a metrics-only log.
    `builder`: the model's builder (its running sums advance); a fresh one when None."""
    scoped = builder_for_split(builder or MetricsBuilder("train"), split)
    extra = check_extra(extra)
    if groups is None:
        merged = {**route(extra, scoped), **scoped.flush_now()}
    else:
        counts = _step_counts(groups, split, set(extra), scoped)
        averages, group_means = _group_values(groups, split, scoped)
        averages.update(counts)
        averages.update(group_means)
        averages["reward_std_dev"] = _std_dev(groups)
        for key in ("reward", "reward_std_dev", "exception_rate"):
            if key in averages:
                averages[f"{split}/{key}"] = averages.pop(key)
        averages.update(route(extra, scoped))
        merged = {**averages, **scoped.flush_now()}
    if not merged:
        return {}
    row = {qualify(k, split): v for k, v in merged.items()}
    row[TRAINING_STEP] = float(step)
    return {k: v for k, v in row.items() if not math.isnan(v)}
