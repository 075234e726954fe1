"""Checkpoint retention: policies as data -> a plan (keep/delete, with reasons) -> applied.

A `Policy` is a union of keep rules plus an optional size budget:

    Policy(rules=[KeepLast(n=2), KeepBest(metric="val/reward", smooth=Ema(alpha=0.5))],
           max_size_bytes=50 * 10**9)

A live checkpoint (status `saving` or `ready`) is kept when any rule keeps it; a policy with no
keep rules keeps every one. The size budget then evicts kept checkpoints, worst-ranked first (by
the first KeepBest rule's score, else oldest first), until the kept total fits.

Whatever the rules say, a plan never deletes (invariant 5):
- the newest checkpoint, nor a checkpoint still saving, nor a pinned one;
- anything at all while the newest checkpoint is still saving;
- a checkpoint a ranked rule cannot score (no value of its metric at its step), unless that
  rule says `unscored="delete"` (as `Policy.art()`, ART's `delete_checkpoints`, does: with val
  every N steps, the checkpoints between vals are what it frees);
and a ranked metric absent from the run's metrics raises RetentionError (nothing is deleted).

Scores are computed from every visible metric value of the run (its step summary, see
`artstore.read.step_summary`: kept in memory per version of the run), so a metric first logged late
counts like any other. The per-step mean of metric M at step s is the mean of every value of M logged at s;
smoothing (`Mean()`, `Window(size=W)` or `Ema(alpha=a)`: `artstore.checkpoints.smoothing`) runs over
the steps that have a value, in step order. Ranks break ties in favour of the later step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Annotated, Literal

import pyarrow as pa
import pydantic

from artstore.checkpoints.smoothing import Mean, Smoothing, smoothed
from artstore.checkpoints.table import Checkpoint
from artstore.errors import RetentionError
from artstore.read.step_summary import StepSummary
from artstore.sizes import format_size, parse_size  # noqa: F401  (parse_size: imported from here by callers)
from artstore.storage import writes

_FROZEN = pydantic.ConfigDict(extra="forbid", frozen=True)


# -- rules -------------------------------------------------------------------------------------
class KeepLast(pydantic.BaseModel):
    """Keep the `n` newest live checkpoints."""

    model_config = _FROZEN
    kind: Literal["keep_last"] = "keep_last"
    n: int = pydantic.Field(ge=1)


class KeepBest(pydantic.BaseModel):
    """Keep the `k` best checkpoints by `metric` (highest for mode max, lowest for min)."""

    model_config = _FROZEN
    kind: Literal["keep_best"] = "keep_best"
    metric: str = pydantic.Field(min_length=1)
    k: int = pydantic.Field(1, ge=1)
    mode: Literal["max", "min"] = "max"
    smooth: Smoothing = Mean()
    unscored: Literal["keep", "delete"] = pydantic.Field(
        "keep", description="A checkpoint with no value of the metric at its step: 'keep' (never deleted) "
                            "or 'delete' (this rule does not keep it, and it ranks last).")
    rank_over: Literal["checkpoints", "history"] = pydantic.Field(
        "checkpoints", description="Rank among the live checkpoints that have a score ('checkpoints'), or "
                                   "among every step of the history with a value ('history', ART's rule: "
                                   "when the best step has no checkpoint, this rule keeps none).")

    def describe(self) -> str:
        over = ", over the history" if self.rank_over == "history" else ""
        return f"{self.metric} ({self.mode}, {self.smooth.describe()}{over})"


class KeepEvery(pydantic.BaseModel):
    """Keep checkpoints whose step is a multiple of `n`."""

    model_config = _FROZEN
    kind: Literal["keep_every"] = "keep_every"
    n: int = pydantic.Field(ge=1)


class KeepSteps(pydantic.BaseModel):
    """Keep these steps (a pin inside the policy; run pins are honoured by every policy)."""

    model_config = _FROZEN
    kind: Literal["keep_steps"] = "keep_steps"
    steps: tuple[int, ...]


class KeepSql(pydantic.BaseModel):
    """Keep the steps a SQL query returns (its `step` column, else its first column). Tables:
    `metrics` (project, model, step, split, name, value, recorded_at) and `checkpoints`."""

    model_config = _FROZEN
    kind: Literal["keep_sql"] = "keep_sql"
    query: str = pydantic.Field(min_length=1)


Rule = Annotated[KeepLast | KeepBest | KeepEvery | KeepSteps | KeepSql, pydantic.Field(discriminator="kind")]


class Policy(pydantic.BaseModel):
    """A retention policy: keep rules (a union) and an optional size budget (bytes)."""

    model_config = _FROZEN
    version: Literal[1] = 1
    rules: tuple[Rule, ...] = ()
    max_size_bytes: int | None = pydantic.Field(None, ge=0)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Policy:
        return cls.model_validate_json(text)

    @classmethod
    def art(cls, best_checkpoint_metric: str = "val/reward") -> Policy:
        """ART's delete_checkpoints rule: keep the latest checkpoint and the step with the best
        (highest) per-step mean of the metric over the whole history; delete every other
        checkpoint, those without a value at their own step included."""
        return cls(rules=(KeepLast(n=1), KeepBest(metric=best_checkpoint_metric, unscored="delete",
                                                   rank_over="history")))

    def ranked(self) -> list[KeepBest]:
        return [r for r in self.rules if isinstance(r, KeepBest)]


# -- the plan ----------------------------------------------------------------------------------
class Decision(pydantic.BaseModel):
    """What a plan does with one checkpoint: `keep`, `delete`, or `gone` (deleted earlier)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    step: int
    action: Literal["keep", "delete", "gone"]
    reasons: list[str]
    status: str
    size_bytes: int | None = None
    uri: str
    linked: bool = False

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


class Plan(pydantic.BaseModel):
    """A retention plan for one run: one decision per checkpoint, in step order."""

    model_config = pydantic.ConfigDict(extra="forbid")
    run: str
    policy: Policy
    decisions: list[Decision]
    created_at: datetime
    blocked: str | None = None
    warnings: list[str] = []

    @property
    def keep(self) -> list[int]:
        return [d.step for d in self.decisions if d.action == "keep"]

    @property
    def delete(self) -> list[int]:
        return [d.step for d in self.decisions if d.action == "delete"]

    def decision(self, step: int) -> Decision:
        return next(d for d in self.decisions if d.step == step)


# -- scores ------------------------------------------------------------------------------------
def summary_of(metrics: pa.Table | StepSummary) -> StepSummary:
    """A long metrics table (step, name, value) as a StepSummary; a summary as it is."""
    return metrics if isinstance(metrics, StepSummary) else StepSummary.from_metrics(metrics)


def step_means(metrics: pa.Table | StepSummary, metric: str) -> dict[int, float]:
    """{step: mean of every value of `metric` logged at that step}, in step order, from a long
    metrics table or a run's step summary."""
    return summary_of(metrics).means(metric)


def best(scores: dict[int, float], mode: str) -> int:
    """The best-scored step of non-empty `scores` (`rank`'s first over every step, in O(n))."""
    sign = -1 if mode == "max" else 1
    return min(scores, key=lambda s: (sign * scores[s], -s))


def rank(scores: dict[int, float], steps: Iterable[int], mode: str) -> list[int]:
    """`steps` that have a score, best first (ties: the later step first)."""
    sign = -1 if mode == "max" else 1
    return sorted((s for s in steps if s in scores), key=lambda s: (sign * scores[s], -s))


def rule_scores(policy: Policy, metrics: pa.Table | StepSummary, run: str = "the run") -> list[dict[int, float]]:
    """One {step: score} per KeepBest rule; RetentionError when a rule's metric was never logged."""
    metrics = summary_of(metrics)
    names = metrics.names()
    out = []
    for rule in policy.ranked():
        if rule.metric not in names:
            known = ", ".join(sorted(names)[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
            raise RetentionError(
                f"cannot rank the checkpoints of {run}: no values of {rule.metric!r} in its metrics "
                f"(metrics logged: {known or 'none'}). Nothing was deleted; log that metric or choose another.")
        out.append(smoothed(step_means(metrics, rule.metric), rule.smooth))
    return out


# -- planning ----------------------------------------------------------------------------------
def make_plan(
    policy: Policy,
    checkpoints: Sequence[Checkpoint],
    metrics: pa.Table | StepSummary,
    *,
    pins: dict[int, str | None] | None = None,
    sql_steps: Callable[[str], set[int]] | None = None,
    run: str = "the run",
) -> Plan:
    """Decide keep/delete for every checkpoint (pure: reads nothing but its arguments). `metrics`
    is the run's long metrics table or its step summary (`Run.step_summary()`).
    `sql_steps(query)` runs a KeepSql rule's query; `pins` are the run's pinned steps."""
    pins = pins or {}
    scores = rule_scores(policy, metrics, run)
    ordered = sorted(checkpoints, key=lambda c: c.step)
    live = [c for c in ordered if c.status != "deleted"]
    keep: dict[int, list[str]] = {c.step: [] for c in live}
    protected: dict[int, list[str]] = {c.step: [] for c in live}
    missed: dict[int, list[str]] = {c.step: [] for c in live}
    newest = live[-1] if live else None
    blocked = None

    for c in live:
        if c is newest:
            protected[c.step].append("latest checkpoint")
        if c.status == "saving":
            protected[c.step].append("still saving")
        if c.step in pins:
            protected[c.step].append("pinned" + (f": {pins[c.step]}" if pins[c.step] else ""))
        for rule, sc in zip(policy.ranked(), scores, strict=True):
            if c.step not in sc and rule.unscored == "keep":
                protected[c.step].append(f"unranked: no {rule.metric} at step {c.step}")
    if newest is not None and newest.status != "ready":
        blocked = f"the newest checkpoint ({newest.step}) is still saving: nothing is deleted until it is ready"

    live_steps = [c.step for c in live]
    if not policy.rules:
        for s in live_steps:
            keep[s].append("no keep rules: everything is kept")
    for rule, sc in _with_scores(policy, scores):
        if isinstance(rule, KeepLast):
            last = set(live_steps[-rule.n:])
            for s in live_steps:
                (keep if s in last else missed)[s].append(f"{'among' if s in last else 'not in'} the last {rule.n}")
        elif isinstance(rule, KeepBest):
            order = rank(sc, sc if rule.rank_over == "history" else live_steps, rule.mode)
            for s in live_steps:
                if s not in sc:
                    if rule.unscored == "delete":
                        missed[s].append(f"no {rule.metric} at step {s}")
                    continue
                r = order.index(s) + 1
                text = f"{rule.describe()} = {sc[s]:.6g}, rank {r} of {len(order)}"
                (keep if r <= rule.k else missed)[s].append(
                    f"best {rule.k}: {text}" if r <= rule.k else f"not best {rule.k}: {text}")
        elif isinstance(rule, KeepEvery):
            for s in live_steps:
                hit = s % rule.n == 0
                (keep if hit else missed)[s].append(f"step {'is' if hit else 'not'} a multiple of {rule.n}")
        elif isinstance(rule, KeepSteps):
            for s in live_steps:
                (keep if s in rule.steps else missed)[s].append(
                    "listed in the policy" if s in rule.steps else "not listed in the policy")
        elif isinstance(rule, KeepSql):
            if sql_steps is None:
                raise RetentionError("this plan has a SQL rule but no way to run it")
            chosen = sql_steps(rule.query)
            for s in live_steps:
                (keep if s in chosen else missed)[s].append(
                    "returned by the SQL rule" if s in chosen else "not returned by the SQL rule")

    kept = {s for s in live_steps if keep[s] or protected[s]}
    warnings: list[str] = []
    evicted: dict[int, str] = {}
    if policy.max_size_bytes is not None:
        evicted, warnings = _evict(policy, scores, live, kept, protected)

    decisions = []
    for c in ordered:
        if c.status == "deleted":
            decisions.append(_decision(c, "gone", [f"deleted earlier: {c.deleted_reason or 'no reason recorded'}"]))
        elif protected[c.step] or blocked:
            reasons = protected[c.step] + keep[c.step] + ([blocked] if blocked and not protected[c.step] else [])
            decisions.append(_decision(c, "keep", reasons))
        elif c.step in evicted:
            decisions.append(_decision(c, "delete", [evicted[c.step]] + keep[c.step]))
        elif keep[c.step]:
            decisions.append(_decision(c, "keep", keep[c.step]))
        else:
            decisions.append(_decision(c, "delete", ["kept by no rule: " + "; ".join(missed[c.step])]))
    return Plan(run=run, policy=policy, decisions=decisions, created_at=writes.now_utc(), blocked=blocked,
                warnings=warnings)


def _with_scores(policy: Policy, scores: list[dict[int, float]]) -> Iterable[tuple[object, dict[int, float]]]:
    it = iter(scores)
    for rule in policy.rules:
        yield rule, (next(it) if isinstance(rule, KeepBest) else {})


def _evict(policy: Policy, scores: list[dict[int, float]], live: list[Checkpoint], kept: set[int],
           protected: dict[int, list[str]]) -> tuple[dict[int, str], list[str]]:
    """Evict kept, unprotected checkpoints worst-ranked first until the kept total fits the budget."""
    budget = policy.max_size_bytes
    size = {c.step: c.size_bytes or 0 for c in live}
    total = sum(size[s] for s in kept)
    candidates = [s for s in sorted(kept) if not protected[s]]
    if policy.ranked():
        rule, sc = policy.ranked()[0], scores[0]
        order = rank(sc, candidates, rule.mode)
        worst_first = [s for s in candidates if s not in sc] + order[::-1]  # unscored rank last
        by = rule.describe()
    else:
        worst_first, by = candidates, "age (oldest first)"
    evicted = {}
    for s in worst_first:
        if total <= budget:
            break
        evicted[s] = (f"size budget {format_size(budget)}: evicted, worst-ranked by {by} "
                      f"(kept total was {format_size(total)})")
        total -= size[s]
    warnings = []
    if total > budget:
        warnings.append(f"kept checkpoints total {format_size(total)}, over the {format_size(budget)} budget: "
                        "the rest are protected (latest, saving, pinned or unranked)")
    return evicted, warnings


def _decision(c: Checkpoint, action: str, reasons: list[str]) -> Decision:
    return Decision(step=c.step, action=action, reasons=reasons, status=c.status, size_bytes=c.size_bytes,
                    uri=c.uri, linked=c.linked)
