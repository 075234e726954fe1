"""ART's PR-era frontend-logging contract (its tests/unit/test_frontend_logging.py), held by artstore.

ART checked parquet files; here the same content is checked in the Lance tables, on local disk
and on S3 (moto) alike (`store_location`).
"""

from __future__ import annotations

import os

import pytest

import artstore as art
from artstore.records import metrics as metrics_mod
from artstore.storage import Location, files


@pytest.fixture
def two_groups(make_trajectory):
    return [
        art.TrajectoryGroup([make_trajectory(0.8, 0)], metadata={"g": 0}, metrics={"judge_score": 0.2}, logs=["g0"]),
        art.TrajectoryGroup([make_trajectory(0.9, 1)], metadata={"g": 1}, metrics={"judge_score": 0.6}, logs=["g1"]),
    ]


async def test_val_log_writes_step_zero_trajectories_of_the_run(store_location, two_groups):
    model = store_location.model()
    await model.log(two_groups, split="val")
    groups = model.run.groups(split="val", step=0)
    assert [g.trajectories[0].reward for g in groups] == [0.8, 0.9]
    assert model.run.trajectories(split="val", step=0)["reward"].to_pylist() == [0.8, 0.9]


async def test_stored_trajectory_columns_hold_group_and_trajectory_fields(store_location, two_groups):
    model = store_location.model()
    await model.log(two_groups, split="val")
    traj = model.run.trajectories()
    for col in ("group_index", "reward", "metrics", "metadata", "tools", "logs", "message_role", "message_raw"):
        assert col in traj.column_names
    grp = model.run.read_table("groups")
    assert [g for g in grp["metadata"].to_pylist()] == ['{"g":0}', '{"g":1}']
    assert grp["logs"].to_pylist() == [["g0"], ["g1"]]
    assert dict(grp["metrics"].to_pylist()[1]) == {"judge_score": 0.6}


async def test_history_row_has_step_recorded_at_and_split_metrics(store_location, two_groups):
    model = store_location.model()
    await model.log(two_groups, split="val")
    h = model.history()
    assert h.column_names[:2] == ["step", "recorded_at"]
    assert {"val/reward", "val/reward_std_dev"} <= set(h.column_names)
    assert str(h.schema.field("recorded_at").type) == "timestamp[us, tz=UTC]"
    assert all(c.startswith("val/") for c in h.column_names[2:] if c != "training_step")
    assert h["training_step"].to_pylist() == [0.0]


async def test_val_then_train_log_give_two_history_rows(store_location, two_groups):
    model = store_location.model()
    await model.log(two_groups, split="val")
    await model.log(two_groups, split="train")
    h = model.history().to_pylist()
    assert len(h) == 2
    assert h[0]["val/reward"] is not None and h[0]["train/reward"] is None
    assert h[1]["train/reward"] is not None and h[1]["val/reward"] is None


async def test_run_lives_at_project_models_name(store_location, two_groups):
    uri, opts = store_location
    model = art.Model(name="mymodel", project="myproj", base_path=uri, storage_options=opts, report_metrics=[])
    await model.log(two_groups)
    run_dir = Location.parse(uri, opts).child("myproj", "models", "mymodel")
    assert model.run.location == run_dir
    model.flush()  # the group commit lands (the default mode)
    assert "logs.lance" in files.list_dir(run_dir)  # the journal: one row per log
    model.run.compact()  # folds the journal into the data tables
    assert {"logs.lance", "trajectories.lance", "groups.lance", "metrics.lance"} <= set(files.list_dir(run_dir))


async def test_trainable_model_logs_train_at_its_current_step(store_location, two_groups):
    uri, opts = store_location
    model = art.TrainableModel(name="m", project="p", base_model="base", base_path=uri, storage_options=opts,
                               report_metrics=[])
    model.run.checkpoints_table().begin(42)
    model.run.checkpoints_table().mark_ready(42, size_bytes=0)
    assert await model.get_step() == 42
    await model.log(two_groups, split="train")
    assert set(model.run.trajectories()["step"].to_pylist()) == {42}


async def test_reward_exception_rate_and_std_follow_art(store_location, make_trajectory):
    model = store_location.model()
    record = await model.log([art.TrajectoryGroup([make_trajectory(0.8), make_trajectory(0.6)])], split="val")
    assert record.metrics["val/reward"] == pytest.approx(0.7)
    assert record.metrics["val/exception_rate"] == 0.0
    assert record.metrics["val/reward_std_dev"] == pytest.approx(0.1)


async def test_group_metric_is_mean_over_groups_named_split_group_key(store_location, two_groups):
    record = await store_location.model().log(two_groups, split="val")
    assert record.metrics["val/group/judge_score"] == pytest.approx(0.4)
    assert "val/group_metric_judge_score" not in record.metrics


async def test_exception_rate_counts_group_exceptions(store_location, make_trajectory):
    group = art.TrajectoryGroup([make_trajectory(1.0), RuntimeError("rollout timed out")])
    record = await store_location.model().log([group], split="val")
    assert record.metrics["val/exception_rate"] == 0.5


async def test_generator_of_trajectories_is_consumed_once(store_location, make_trajectory):
    group = art.TrajectoryGroup(make_trajectory(r) for r in (1.0, 3.0))
    record = await store_location.model().log([group], split="val")
    assert record.metrics["val/reward"] == 2.0
    assert len(group.trajectories) == 2


def test_trajectory_metrics_mean_over_those_that_have_them(make_trajectory):
    g = art.TrajectoryGroup([make_trajectory(1.0, correct=True), make_trajectory(0.0, correct=False),
                             make_trajectory(0.5)])
    values = metrics_mod.compute_metrics([g], "val", {"loss/train": 0.9, "lr": 1e-5, "nan": float("nan")})
    assert values["val/correct"] == 0.5
    assert values["loss/train"] == 0.9 and values["val/lr"] == 1e-5
    assert "val/nan" not in values
    assert values["val/data/step_num_trajectories"] == 3.0
    assert "val/data/step_num_groups_trainable" not in values  # 0.5.23 counts trainable groups on train only
    train = metrics_mod.compute_metrics([g], "train")
    assert train["data/step_num_groups_trainable"] == 1.0 and train["data/cum/num_groups_trainable"] == 1.0


def test_base_path_and_report_metrics_defaults():
    model = art.Model(name="m", project="p")
    assert model.base_path == ".art" and model.report_metrics is None
    model = art.Model(name="m", project="p", base_path="/tmp/x", report_metrics=["wandb", "custom"])
    assert model.base_path == "/tmp/x" and model.report_metrics == ["wandb", "custom"]


@pytest.mark.parametrize(("report_metrics", "key", "expected"), [
    (None, None, False), (None, "k", True), (["wandb"], None, True), ([], "k", False), ([], None, False),
])
def test_wandb_is_used_exactly_when_art_would(monkeypatch, report_metrics, key, expected):
    from artstore.wandb_mirror import wants_wandb
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("WANDB_API_KEY", key)
    assert wants_wandb(report_metrics) is expected
    assert os.environ.get("WANDB_API_KEY") == key
