"""History rows named and computed as openpipe-art 0.5.23 writes them (its `Model.log`), and
stores written with 0.5.9's names read as the same series."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import artstore as art
from artstore.log.commit import write_log
from artstore.records import metric_names
from artstore.records.metrics import compute_metrics


def model(base_path, **kw):
    return art.TrainableModel(name="agent", project="p", run_name="run-1", base_model="b",
                              base_path=str(base_path), report_metrics=[], **kw)


def group(make_trajectory, rewards, **kw):
    return art.TrajectoryGroup([make_trajectory(r, i) for i, r in enumerate(rewards)], **kw)


async def test_val_row_has_group_keys_prefixed_counts_and_training_step(base_path, make_trajectory):
    m = model(base_path)
    g1 = group(make_trajectory, [0.8, 0.6], metrics={"judge_score": 0.2})
    g2 = art.TrajectoryGroup([make_trajectory(1.0), RuntimeError("boom")], metrics={"judge_score": 0.6})
    record = await m.log([g1, g2], split="val", step=3)
    assert record.metrics == pytest.approx({
        "val/reward": (0.8 + 0.6 + 1.0) / 3, "val/reward_std_dev": 0.1, "val/exception_rate": 0.25,
        "val/data/step_num_scenarios": 2.0, "val/data/step_num_trajectories": 4.0,
        "val/data/step_num_groups_submitted": 2.0, "val/group/judge_score": 0.4, "training_step": 3.0,
    })
    row = m.history().to_pylist()[0]
    assert row["training_step"] == 3.0 and row["val/group/judge_score"] == pytest.approx(0.4)


async def test_train_counts_are_unprefixed_with_running_sums_across_model_recreation(base_path, make_trajectory):
    groups = [group(make_trajectory, [1.0, 0.0]), group(make_trajectory, [0.5, 0.5])]
    await model(base_path).log(groups, split="train", step=0)
    record = await model(base_path).log(groups, split="train", step=1)  # a new Model object: sums continue
    assert record.metrics["data/step_num_trajectories"] == 4.0
    assert record.metrics["data/step_num_groups_trainable"] == 1.0
    assert record.metrics["data/cum/num_trajectories"] == 8.0
    assert record.metrics["data/cum/num_groups_trainable"] == 2.0
    assert "train/data/step_num_trajectories" not in record.metrics


async def test_costs_roll_up_into_context_all_and_cumulative(base_path, make_trajectory):
    m = model(base_path)
    await m.log(None, split="train", step=1, metrics={"costs/train/judge": 0.25, "costs/train/tinker": 0.5})
    record = await model(base_path).log(None, split="train", step=2, metrics={"costs/train/judge": 1.0})
    assert record.metrics == pytest.approx({
        "costs/train/judge": 1.0, "costs/train": 1.0, "costs/all": 1.0, "costs/cum/train/judge": 1.25,
        "costs/cum/train": 1.75, "costs/cum/all": 1.75, "training_step": 2.0,
    })  # only keys logged this step are emitted: no costs/cum/train/tinker
    assert m.read_state()["_metrics_builder_state"]["cum_state"]["costs/cum/all"] == pytest.approx(1.75)


async def test_group_and_trajectory_costs_go_to_the_builder_not_the_means(base_path, make_trajectory):
    t = make_trajectory(1.0)
    t.metrics["costs/eval/judge"] = 0.1
    record = await model(base_path).log([art.TrajectoryGroup([t, t.model_copy()], metrics={"costs/eval/grader": 1.0})],
                                        split="val")
    assert record.metrics["costs/eval/judge"] == pytest.approx(0.2)  # summed over trajectories
    assert record.metrics["costs/eval"] == pytest.approx(1.2) and record.metrics["costs/all"] == pytest.approx(1.2)
    assert not any(k.startswith("val/costs") for k in record.metrics)


@pytest.mark.parametrize(("key", "split", "expected"), [
    ("judge/score", "val", "val/judge/score"),
    ("loss/train", "val", "loss/train"),
    ("lr", "train", "train/lr"),
    ("val/reward", "val", "val/reward"),
    ("eval/reward", "eval", "eval/eval/reward"),  # 0.5.23 prefixes any split outside train/val/test
    ("time/step_wall_s", "val", "time/step_wall_s"),
    ("loss", "sft", "sft/loss"),
])
def test_keys_are_qualified_as_0_5_23_does(key, split, expected):
    assert metric_names.qualify(key, split) == expected


def test_unknown_slash_key_in_metrics_is_prefixed_with_the_split():
    row = compute_metrics(None, "val", {"judge/score": 0.5, "loss/train": 0.1})
    assert row == {"val/judge/score": 0.5, "loss/train": 0.1, "training_step": 0.0}


def test_legacy_cost_key_is_rejected_naming_it():
    with pytest.raises(art.ValidationError, match="costs_prefill"):
        compute_metrics(None, "train", {"costs_prefill": 1.0})


@given(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.sampled_from(["train", "val", "test", "eval"]))
def test_old_names_map_to_new_and_new_names_are_fixed_points(key, split):
    new_group = metric_names.current_name(f"{split}/group_metric_{key}")
    assert new_group == f"{split}/group/{key}"
    assert metric_names.current_name(new_group) == new_group
    data = f"{split}/data/step_num_{key}"
    assert metric_names.current_name(data) == (f"data/step_num_{key}" if split == "train" else data)
    assert metric_names.current_name(metric_names.current_name(data)) == metric_names.current_name(data)


async def test_store_written_with_0_5_9_names_reads_as_one_series(base_path, make_trajectory):
    m = model(base_path)
    write_log(m.run.location, None, split="val", step=0, metrics_as_given=True,
              metrics={"val/reward": 0.5, "val/group_metric_judge_score": 0.1})
    write_log(m.run.location, None, split="train", step=0, metrics_as_given=True,
              metrics={"train/data/step_num_trajectories": 4.0})
    await m.log([group(make_trajectory, [1.0], metrics={"judge_score": 0.3})], split="val", step=1)
    await m.log([group(make_trajectory, [1.0, 0.0])], split="train", step=1)
    h = m.history()
    assert h["val/group/judge_score"].to_pylist()[:3] == [0.1, None, pytest.approx(0.3)]
    assert h["data/step_num_trajectories"].to_pylist() == [None, 4.0, None, 2.0]
    assert not any("group_metric" in c or c.startswith("train/data/") for c in h.column_names)
    assert m.run.best_step("val/group/judge_score") == 1


async def test_two_cost_only_logs_at_one_step_are_two_rows_and_a_retry_is_one(base_path):
    m = model(base_path)
    m.metrics_builder("train").add_cost("train/judge", 0.5)
    first = await m.log(None, split="train", metrics={}, step=1)
    m.metrics_builder("train").add_cost("train/judge", 0.25)
    second = await m.log(None, split="train", metrics={}, step=1)
    assert first.log_id != second.log_id and second.metrics["costs/cum/all"] == 0.75
    again = await m.log(None, split="train", metrics={"loss/train": 0.1}, step=2, log_id="fixed")
    retry = await model(base_path).log(None, split="train", metrics={"loss/train": 0.1}, step=2, log_id="fixed")
    assert not retry.created and len(m.history()) == 3 and again.created


async def test_many_writers_end_with_exact_running_sums(base_path, make_trajectory):
    async def writer(i):
        m = model(base_path)
        for s in range(3):
            await m.log([group(make_trajectory, [1.0, 0.0])], split="train", step=10 * i + s,
                        metrics={"costs/train/judge": 0.5})

    await asyncio.gather(*(writer(i) for i in range(4)))
    sums = model(base_path).read_state()["_metrics_builder_state"]["cum_state"]
    assert sums["data/cum/num_trajectories"] == 4 * 3 * 2
    assert sums["costs/cum/all"] == pytest.approx(4 * 3 * 0.5)


@given(st.lists(st.lists(st.tuples(st.sampled_from(["train/a", "train/b/c", "eval/d", "gpu"]),
                                   st.floats(0, 100, allow_nan=False)), max_size=5), min_size=1, max_size=5))
def test_cost_rollups_and_running_sums_add_up(steps):
    builder = art.MetricsBuilder("train")
    total = 0.0
    for costs in steps:
        for path, usd in costs:
            builder.add_cost(path, usd)
        row = builder.flush_now()
        step_total = sum(usd for _, usd in costs)
        total += step_total
        if costs:
            assert row["costs/all"] == pytest.approx(step_total)
            assert row["costs/cum/all"] == pytest.approx(total)
            if any(p.startswith("train/") for p, _ in costs):
                assert row["costs/train"] == pytest.approx(sum(u for p, u in costs if p.startswith("train/")))
        else:
            assert row == {}


@given(st.lists(st.lists(st.one_of(st.none(), st.sampled_from(
    ["train/group_metric_a", "val/group_metric_b", "train/data/step_num_x", "val/data/step_num_y", "val/reward",
     "train/group/a", "data/step_num_x", "c"])), max_size=8), max_size=4))
def test_vectorised_names_equal_the_name_by_name_mapping(chunks):
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], pa.string())
    want = [None if n is None else metric_names.current_name(n) for c in chunks for n in c]
    assert metric_names.current_names(column).to_pylist() == want
    assert metric_names.current_names(column.combine_chunks()).to_pylist() == want
