"""Retention policies and plans (pure: no store). Numbers by hand, and hypothesis against a plain
reference computation of the kept set."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artstore as art
from artstore.checkpoints.retention import (
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepSql,
    KeepSteps,
    Policy,
    make_plan,
    parse_size,
    step_means,
)
from artstore.checkpoints.smoothing import Ema, Mean, Window, parse_smoothing, smoothed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ckpt(step: int, status: str = "ready", size: int | None = 10, linked: bool = False) -> art.Checkpoint:
    return art.Checkpoint(step=step, uri=f"/x/checkpoints/{step:04d}", status=status, size_bytes=size,
                          base_model="b", table_versions={}, linked=linked, created_at=T0, ready_at=T0,
                          deleted_at=T0 if status == "deleted" else None,
                          deleted_reason="old" if status == "deleted" else None, deleted_by_policy=None)


def metrics_table(rows: list[tuple[int, str, float]]) -> pa.Table:
    n = len(rows)
    return pa.table({"log_id": [f"l{i}" for i in range(n)], "step": pa.array([r[0] for r in rows], pa.int64()),
                     "split": ["val"] * n, "name": [r[1] for r in rows],
                     "value": pa.array([r[2] for r in rows], pa.float64()), "recorded_at": [T0] * n})


# Per-step means of "m" at steps 1..5: 0, 5, 0, 3, 3 (step 2 from two values: 4 and 6).
HAND = [(1, "m", 0.0), (2, "m", 4.0), (2, "m", 6.0), (3, "m", 0.0), (4, "m", 3.0), (5, "m", 3.0)]


def test_step_means_window_and_ema_by_hand():
    means = step_means(metrics_table(HAND), "m")
    assert means == {1: 0.0, 2: 5.0, 3: 0.0, 4: 3.0, 5: 3.0}
    assert smoothed(means, Mean()) == means
    # window of 2 steps: 0, (0+5)/2, (5+0)/2, (0+3)/2, (3+3)/2
    assert smoothed(means, Window(size=2)) == {1: 0.0, 2: 2.5, 3: 2.5, 4: 1.5, 5: 3.0}
    # ema alpha .5: 0, .5*5+.5*0, .5*0+.5*2.5, .5*3+.5*1.25, .5*3+.5*2.125
    assert smoothed(means, Ema(alpha=0.5)) == {1: 0.0, 2: 2.5, 3: 1.25, 4: 2.125, 5: 2.5625}
    assert smoothed(means, Ema(alpha=1.0)) == means


@pytest.mark.parametrize("smooth, k, kept", [
    (Mean(), 1, {2, 6}),            # the spike at step 2
    (Window(size=2), 1, {5, 6}),    # 3.0 at step 5
    (Window(size=2), 2, {3, 5, 6}),  # 2.5 ties at steps 2 and 3: the later step wins
    (Ema(alpha=0.5), 1, {5, 6}),    # 2.5625 at step 5
    (Ema(alpha=0.5), 2, {2, 5, 6}),  # then 2.5 at step 2
])
def test_keep_best_by_mean_window_and_ema(smooth, k, kept):
    # checkpoints 1..6; step 6 (the latest) has no value of m
    plan = make_plan(Policy(rules=(KeepBest(metric="m", k=k, smooth=smooth),)),
                     [ckpt(s) for s in range(1, 7)], metrics_table(HAND))
    assert set(plan.keep) == kept
    assert plan.decision(6).reasons[0] == "latest checkpoint"


def test_min_mode_keeps_the_lowest():
    plan = make_plan(Policy(rules=(KeepBest(metric="m", mode="min", k=1),)),
                     [ckpt(s) for s in range(1, 7)], metrics_table(HAND))
    assert set(plan.keep) == {3, 6}  # 0.0 at steps 1 and 3: the later one


def test_size_budget_evicts_worst_ranked_first():
    # sizes 10..50; means 5, 1, 4, 2, 3: best first 1, 3, 5, 4, 2; the latest (5) is protected
    rows = [(1, "m", 5.0), (2, "m", 1.0), (3, "m", 4.0), (4, "m", 2.0), (5, "m", 3.0)]
    ck = [ckpt(s, size=10 * s) for s in range(1, 6)]
    plan = make_plan(Policy(rules=(KeepLast(n=5), KeepBest(metric="m")), max_size_bytes=100), ck,
                     metrics_table(rows))
    # total 150 > 100: evict 2 (20) -> 130, evict 4 (40) -> 90 <= 100
    assert plan.keep == [1, 3, 5] and plan.delete == [2, 4]
    assert "size budget 100B: evicted" in plan.decision(2).reason
    # without a ranked rule the oldest go first: 1 (140), 2 (120), 3 (90)
    plan = make_plan(Policy(rules=(KeepLast(n=5),), max_size_bytes=100), ck, metrics_table([]))
    assert plan.keep == [4, 5] and plan.delete == [1, 2, 3]
    # a budget alone trims from everything (a policy without keep rules keeps all)
    plan = make_plan(Policy(max_size_bytes=120), ck, metrics_table([]))
    assert plan.keep == [3, 4, 5]


def test_size_budget_edges():
    ck = [ckpt(s, size=10 * s) for s in range(1, 6)]
    # exactly at the budget: nothing evicted
    assert make_plan(Policy(max_size_bytes=150), ck, metrics_table([])).delete == []
    # a checkpoint the ranked rule cannot score (unscored="delete") but another rule keeps ranks last
    rows = [(1, "m", 1.0), (2, "m", 9.0), (4, "m", 5.0), (5, "m", 0.0)]
    plan = make_plan(Policy(rules=(KeepBest(metric="m", k=5, unscored="delete"), KeepLast(n=5)),
                            max_size_bytes=120), ck, metrics_table(rows))
    # 150 -> evict 3 (unscored, 30) -> 120 fits
    assert plan.delete == [3] and plan.keep == [1, 2, 4, 5]


def test_size_budget_never_evicts_protected_and_warns():
    ck = [ckpt(s, size=100) for s in range(1, 5)] + [ckpt(5, status="ready", size=100)]
    plan = make_plan(Policy(max_size_bytes=150), ck, metrics_table([]), pins={1: "paper", 2: None})
    assert plan.keep == [1, 2, 5]
    assert plan.decision(1).reasons[0] == "pinned: paper"
    assert plan.warnings and "over the 150B budget" in plan.warnings[0]


def test_missing_ranked_metric_is_an_error():
    with pytest.raises(art.RetentionError, match="no values of 'val/reward'.*Nothing was deleted"):
        make_plan(Policy.art(), [ckpt(1), ckpt(2)], metrics_table([(1, "train/loss", 1.0)]))
    with pytest.raises(art.RetentionError, match="metrics logged: none"):
        make_plan(Policy.art(), [ckpt(1), ckpt(2)], metrics_table([]))


def test_unscored_checkpoints_are_kept_unless_the_rule_says_delete():
    rows = [(2, "m", 1.0), (4, "m", 2.0)]
    ck = [ckpt(s) for s in range(1, 6)]
    plan = make_plan(Policy(rules=(KeepBest(metric="m"),)), ck, metrics_table(rows))
    assert plan.keep == [1, 3, 4, 5] and plan.delete == [2]
    assert plan.decision(3).reason == "unranked: no m at step 3"
    plan = make_plan(Policy(rules=(KeepBest(metric="m", unscored="delete"),)), ck, metrics_table(rows))
    assert plan.keep == [4, 5]


def test_newest_saving_blocks_every_deletion():
    ck = [ckpt(1), ckpt(2), ckpt(3, status="saving", size=None)]
    plan = make_plan(Policy(rules=(KeepLast(n=1),)), ck, metrics_table([]))
    assert plan.delete == [] and plan.blocked and "still saving" in plan.blocked
    assert "nothing is deleted until it is ready" in plan.decision(1).reason


def test_every_nth_listed_steps_and_sql_rule():
    ck = [ckpt(s) for s in range(0, 10)]
    plan = make_plan(Policy(rules=(KeepEvery(n=4), KeepSteps(steps=(3,)), KeepSql(query="q"))), ck,
                     metrics_table([]), sql_steps=lambda q: {5, 42})
    assert plan.keep == [0, 3, 4, 5, 8, 9]
    assert plan.decision(1).reason == ("kept by no rule: step not a multiple of 4; not listed in the policy; "
                                       "not returned by the SQL rule")


def test_deleted_checkpoints_are_reported_gone_and_never_latest():
    ck = [ckpt(1), ckpt(2), ckpt(3, status="deleted")]
    plan = make_plan(Policy(rules=(KeepLast(n=1),)), ck, metrics_table([]))
    assert plan.decision(3).action == "gone" and plan.keep == [2] and plan.delete == [1]


def test_policy_json_round_trip():
    policy = Policy(rules=(KeepLast(n=2), KeepBest(metric="val/reward", k=3, mode="min", smooth=Ema(alpha=0.9)),
                           KeepBest(metric="val/acc", smooth=Window(size=5), unscored="delete"), KeepEvery(n=10),
                           KeepSteps(steps=(1, 7)), KeepSql(query="SELECT step FROM metrics")),
                    max_size_bytes=parse_size("50GB"))
    text = policy.to_json()
    assert Policy.from_json(text) == policy
    assert '"kind":"ema"' in text and '"max_size_bytes":50000000000' in text
    plan = make_plan(policy, [ckpt(1)], metrics_table([(1, "val/reward", 1.0), (1, "val/acc", 1.0)]),
                     sql_steps=lambda q: set())
    assert art.Plan.model_validate_json(plan.model_dump_json()) == plan


def test_parsers():
    assert parse_size("50GB") == 50 * 10**9 and parse_size("1.5GiB") == 3 * 2**29 and parse_size("7") == 7
    assert parse_smoothing("ema:0.9") == Ema(alpha=0.9) and parse_smoothing("window:5") == Window(size=5)
    assert parse_smoothing("mean") == Mean()
    for bad in ("ema:2", "window:0", "median", "ema"):
        with pytest.raises(art.ValidationError):
            parse_smoothing(bad)
    with pytest.raises(art.ValidationError):
        parse_size("lots")


# -- hypothesis: the plan against a plain reference -----------------------------------------------
def reference_kept(ckpts, rows, pins, policy):
    """The kept set, computed plainly from the policy's definition; "error" for a missing metric."""
    names = {name for _, name, _ in rows}
    best_rules = [r for r in policy.rules if r.kind == "keep_best"]
    if any(r.metric not in names for r in best_rules):
        return "error"
    status = {c.step: c.status for c in ckpts}
    size = {c.step: c.size_bytes or 0 for c in ckpts}
    live = sorted(s for s in status if status[s] != "deleted")
    if not live:
        return set()
    if status[live[-1]] != "ready":
        return set(live)

    def scores(rule):
        values = defaultdict(list)
        for step, name, value in rows:
            if name == rule.metric:
                values[step].append(value)
        steps = sorted(values)
        means = [sum(values[s]) / len(values[s]) for s in steps]
        if rule.smooth.kind == "window":
            w = rule.smooth.size
            means = [sum(means[max(0, i - w + 1): i + 1]) / len(means[max(0, i - w + 1): i + 1])
                     for i in range(len(means))]
        elif rule.smooth.kind == "ema":
            a, ema = rule.smooth.alpha, []
            for m in means:
                ema.append(m if not ema else a * m + (1 - a) * ema[-1])
            means = ema
        return dict(zip(steps, means, strict=True))

    def best_first(rule, sc, steps):
        scored = [s for s in steps if s in sc]
        if rule.mode == "max":
            return sorted(scored, key=lambda s: (sc[s], s), reverse=True)
        return sorted(scored, key=lambda s: (sc[s], -s))

    must = {live[-1]} | {s for s in live if status[s] == "saving"} | {s for s in live if s in pins}
    kept = set(live) if not policy.rules else set()
    for rule in policy.rules:
        if rule.kind == "keep_last":
            kept |= set(live[-rule.n:])
        elif rule.kind == "keep_best":
            sc = scores(rule)
            kept |= set(best_first(rule, sc, live)[: rule.k])
            if rule.unscored == "keep":
                must |= {s for s in live if s not in sc}
        elif rule.kind == "keep_every":
            kept |= {s for s in live if s % rule.n == 0}
        elif rule.kind == "keep_steps":
            kept |= {s for s in live if s in rule.steps}
    kept |= must
    if policy.max_size_bytes is not None:
        total = sum(size[s] for s in kept)
        candidates = sorted(kept - must)
        if best_rules:
            sc = scores(best_rules[0])
            order = [s for s in candidates if s not in sc] + best_first(best_rules[0], sc, candidates)[::-1]
        else:
            order = candidates
        for s in order:
            if total <= policy.max_size_bytes:
                break
            kept.discard(s)
            total -= size[s]
    return kept


smooths = st.one_of(st.just(Mean()), st.builds(Window, size=st.integers(1, 4)),
                    st.builds(Ema, alpha=st.sampled_from([0.25, 0.5, 0.75, 1.0])))
keep_best = st.builds(KeepBest, metric=st.sampled_from(["m1"] * 6 + ["m2"] * 3 + ["absent"]), k=st.integers(1, 3),
                      mode=st.sampled_from(["max", "min"]), smooth=smooths,
                      unscored=st.sampled_from(["keep", "delete"]))
rules = st.one_of(
    keep_best,
    keep_best,
    st.builds(KeepLast, n=st.integers(1, 4)),
    st.builds(KeepEvery, n=st.integers(1, 5)),
    st.builds(KeepSteps, steps=st.lists(st.integers(0, 15), max_size=3).map(tuple)),
)
policies = st.builds(Policy, rules=st.lists(rules, max_size=3).map(tuple),
                     max_size_bytes=st.one_of(st.none(), st.integers(0, 30).map(lambda n: 10 * n)))


@st.composite
def runs(draw):
    steps = sorted(draw(st.sets(st.integers(0, 15), min_size=1, max_size=10)))
    statuses = st.sampled_from(["ready"] * 6 + ["saving", "deleted"])
    ckpts = [ckpt(s, status=(st_ := draw(statuses)), size=None if st_ == "saving" else 10 * draw(st.integers(0, 6)))
             for s in steps]
    # Values are small integers: ties are frequent and every mean is exact. m1 is logged at most
    # steps, m2 first appears late (from a drawn step on), "other" anywhere; some steps have none.
    rows = []
    m2_from = draw(st.integers(0, 16))
    for s in range(16):
        for name, present in (("m1", 0.8), ("m2", 1.0 if s >= m2_from else 0.0), ("other", 0.3)):
            if present and draw(st.floats(0, 1)) < present:
                rows += [(s, name, float(v)) for v in draw(st.lists(st.integers(-3, 3), min_size=1, max_size=2))]
    rows = draw(st.permutations(rows))
    pins = {s: None for s in draw(st.sets(st.integers(0, 15), max_size=3))}
    return ckpts, rows, pins


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=runs(), policy=policies)
def test_plan_matches_reference_and_invariants_hold(run, policy):
    ckpts, rows, pins = run
    expected = reference_kept(ckpts, rows, pins, policy)
    if expected == "error":
        with pytest.raises(art.RetentionError):
            make_plan(policy, ckpts, metrics_table(rows), pins=pins)
        return
    plan = make_plan(policy, ckpts, metrics_table(rows), pins=pins)
    assert set(plan.keep) == expected
    live = [c for c in ckpts if c.status != "deleted"]
    # one decision per checkpoint, each with a reason; deleted ones stay gone
    assert [d.step for d in plan.decisions] == [c.step for c in ckpts]
    assert all(d.reasons and all(d.reasons) for d in plan.decisions)
    assert {d.step for d in plan.decisions if d.action == "gone"} == {c.step for c in ckpts if c.status == "deleted"}
    if live:
        assert live[-1].step in plan.keep                                       # the latest is kept
        assert {c.step for c in live if c.status == "saving"} <= set(plan.keep)  # saving is kept
        assert {c.step for c in live if c.step in pins} <= set(plan.keep)       # pinned is kept
        if live[-1].status != "ready":
            assert plan.delete == []                                             # newest not ready
    for rule in policy.rules:  # a checkpoint a keep-unscored rule cannot rank is kept
        if rule.kind == "keep_best" and rule.unscored == "keep":
            ranked = {s for s, n, _ in rows if n == rule.metric}
            assert {c.step for c in live if c.step not in ranked} <= set(plan.keep)
