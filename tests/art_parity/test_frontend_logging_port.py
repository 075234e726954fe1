"""ART's own unit tests for frontend logging, ported to artstore.

Source: OpenPipe/ART `tests/unit/test_frontend_logging.py`, the version that asserts 0.5.23's names
(`val/group/judge_score`, `training_step`, `data/step_num_*`, `costs/*` rollups, `train_sft` rows,
`TrainableModel(run_name=...)`): 37 tests. Ported here by changing the import to artstore and reading
what ART reads from `history.jsonl` and its parquet files through `Model.history()` (=
`Run.history()`) and `Run.groups()` / `Run.trajectories()`. The mocks ART uses at its backend seam
(`_get_step`, `_train_sft`) are kept as they are.

Not ported (they need ART's own LocalBackend, a GPU backend): the two
`TestLocalBackendAutomaticMetrics` tests (GPU cost per hour from the CUDA device name) and
`TestGradientStepMetrics.test_local_backend_train_returns_gradient_step_count` (LocalBackend.train).
34 of 37 are ported, and all 34 pass; see docs/switching-from-art.md.
"""

from __future__ import annotations

import os
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import pytest

import artstore as art
from artstore import Model, TrainableModel, Trajectory, TrajectoryGroup


def rows(model: Any) -> list[dict]:
    """The run's history rows as ART's history.jsonl holds them: a row has the metrics it logged."""
    return [{k: v for k, v in r.items() if v is not None} for r in model.history().to_pylist()]


def first_row(model: Any) -> dict:
    return rows(model)[0]


def model_at(tmp_path, name="test", project="test", **kw) -> Model:
    return Model(name=name, project=project, base_path=str(tmp_path), report_metrics=[], **kw)


def traj(reward: float, content: str = "test", **kw: Any) -> Trajectory:
    return Trajectory(reward=reward, messages_and_choices=[{"role": "user", "content": content}], **kw)


# -- TestFrontendLoggingCompatibility -------------------------------------------------------------
@pytest.fixture
def two_groups() -> list[TrajectoryGroup]:
    return [
        TrajectoryGroup(trajectories=[Trajectory(
            reward=0.8, metrics={"duration": 5.2, "tokens": 100}, metadata={"trace_id": "abc-123"},
            messages_and_choices=[{"role": "system", "content": "You are helpful."},
                                  {"role": "user", "content": "Hello"},
                                  {"role": "assistant", "content": "Hi there!"}],
            logs=["log1", "log2"])], exceptions=[]),
        TrajectoryGroup(trajectories=[Trajectory(
            reward=0.9, metrics={"duration": 3.1, "tokens": 50}, metadata={"trace_id": "def-456"},
            messages_and_choices=[{"role": "user", "content": "What's 2+2?"}, {"role": "assistant", "content": "4"}],
            logs=[])], exceptions=[]),
    ]


async def test_logged_groups_read_back_like_read_trajectory_groups_parquet(tmp_path, two_groups):
    model = model_at(tmp_path, name="test-model", project="test-project")
    await model.log(two_groups, split="val")
    loaded = model.run.groups(split="val", step=0)
    assert len(loaded) == 2
    assert loaded[0].trajectories[0].reward == 0.8
    assert loaded[1].trajectories[0].reward == 0.9


async def test_stored_trajectories_hold_the_parquet_columns(tmp_path, two_groups):
    model = model_at(tmp_path, name="test-model", project="test-project")
    await model.log(two_groups, split="val")
    group = model.run.groups(split="val", step=0)[0]
    t = group.trajectories[0]
    # ART's parquet columns: group_index, group_metadata/metrics/logs, reward, metrics, metadata,
    # tools, logs, messages; each is a field of what artstore gives back
    assert (t.reward, t.metrics, t.metadata, t.logs) == (0.8, {"duration": 5.2, "tokens": 100},
                                                          {"trace_id": "abc-123"}, ["log1", "log2"])
    assert [m["content"] for m in t.messages()] == ["You are helpful.", "Hello", "Hi there!"]
    assert (group.metadata, group.metrics, group.logs, t.tools) == ({}, {}, [], None)
    table = model.run.trajectories(split="val", step=0)
    assert table.num_rows == 2 and "reward" in table.column_names


# -- TestHistoryJsonlCompatibility ----------------------------------------------------------------
@pytest.fixture
def one_group() -> list[TrajectoryGroup]:
    return [TrajectoryGroup(trajectories=[
        Trajectory(reward=0.8, metrics={"custom_metric": 42.0},
                   messages_and_choices=[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]),
        Trajectory(reward=0.6, metrics={"custom_metric": 38.0},
                   messages_and_choices=[{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye!"}]),
    ], exceptions=[])]


async def test_history_row_has_step_recorded_at_and_prefixed_reward(tmp_path, one_group):
    model = model_at(tmp_path, name="test-model", project="test-project")
    await model.log(one_group, split="val")
    entry = first_row(model)
    assert "step" in entry and "recorded_at" in entry and "val/reward" in entry


async def test_history_reads_as_a_table_with_reward_and_std_dev(tmp_path, one_group):
    model = model_at(tmp_path, name="test-model", project="test-project")
    await model.log(one_group, split="val")
    columns = model.history().column_names
    assert {"step", "val/reward", "val/reward_std_dev"} <= set(columns)


async def test_each_log_call_appends_a_history_row(tmp_path, one_group):
    model = model_at(tmp_path, name="test-model", project="test-project")
    await model.log(one_group, split="val")
    await model.log(one_group, split="train")
    history = model.history()
    assert history.num_rows == 2
    assert any("val/" in c for c in history.column_names) and any("train/" in c for c in history.column_names)


# -- TestPathStructure ----------------------------------------------------------------------------
async def test_the_run_lives_where_localbackend_puts_it(tmp_path):
    model = model_at(tmp_path, name="mymodel", project="myproj")
    await model.log([TrajectoryGroup(trajectories=[traj(0.5)], exceptions=[])], split="val")
    assert (tmp_path / "myproj" / "models" / "mymodel").is_dir()
    assert model.run.groups(split="val", step=0)[0].trajectories[0].reward == 0.5


async def test_trainable_model_logs_train_trajectories_at_the_backend_step(tmp_path):
    model = TrainableModel(run_name="mymodel", name="mymodel", project="myproj", base_model="gpt-4",
                           base_path=str(tmp_path), report_metrics=[])
    backend = MagicMock()
    backend._get_step = AsyncMock(return_value=42)
    model._backend = backend
    await model.log([TrajectoryGroup(trajectories=[traj(0.5)], exceptions=[])], split="train")
    assert model.run.trajectories(split="train")["step"].to_pylist() == [42]


# -- TestMetricCalculation ------------------------------------------------------------------------
async def test_metric_names_are_routed_into_taxonomy_namespaces(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.7, metrics={"custom": 1.0})], exceptions=[])], split="val")
    entry = first_row(model)
    names = [k for k in entry if k not in ("step", "recorded_at", "training_step")]
    assert all(k.startswith(("val/", "data/")) for k in names), names
    assert entry["training_step"] == 0


async def test_reward_exception_rate_and_std_dev_are_computed(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.8, "test1"), traj(0.6, "test2")], exceptions=[])],
                    split="val")
    entry = first_row(model)
    assert {"val/reward", "val/exception_rate", "val/reward_std_dev"} <= set(entry)
    assert entry["val/reward"] == 0.7


async def test_group_metrics_are_averaged_once_per_group(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.8, "a")], metrics={"judge_score": 0.2}, exceptions=[]),
                     TrajectoryGroup(trajectories=[traj(0.6, "b")], metrics={"judge_score": 0.6}, exceptions=[])],
                    split="val")
    assert first_row(model)["val/group/judge_score"] == 0.4


async def test_no_exceptions_is_a_zero_exception_rate(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.5)], exceptions=[])], split="val")
    assert first_row(model)["val/exception_rate"] == 0.0


async def test_group_exceptions_count_in_the_exception_rate(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.5)], exceptions=[ValueError("boom")])], split="val")
    assert first_row(model)["val/exception_rate"] == pytest.approx(0.5)


async def test_a_generator_of_trajectories_is_consumed_once(tmp_path):
    model = model_at(tmp_path)

    def trajectories():
        yield traj(1.0, "first", metrics={"custom": 1.0})
        yield traj(3.0, "second", metrics={"custom": 3.0})

    await model.log(trajectories(), split="val")
    entry = first_row(model)
    assert entry["val/reward"] == pytest.approx(2.0) and entry["val/custom"] == pytest.approx(2.0)


async def test_train_trajectory_metrics_get_the_train_prefix(tmp_path):
    model = model_at(tmp_path)
    await model.log([TrajectoryGroup(trajectories=[traj(0.7, metrics={"custom_score": 1.0, "reward/prefixed": 2.0})],
                                     exceptions=[])], split="train")
    entry = first_row(model)
    assert (entry["train/reward"], entry["train/exception_rate"]) == (0.7, 0.0)
    assert (entry["train/custom_score"], entry["train/reward/prefixed"]) == (1.0, 2.0)


async def test_train_logs_add_data_counts_from_the_groups(tmp_path):
    model = model_at(tmp_path)
    await model.log([
        TrajectoryGroup(trajectories=[traj(0.8, "a"), traj(0.2, "b")], metadata={"scenario_id": "scenario-1"}),
        TrajectoryGroup(trajectories=[traj(0.5, "c")], exceptions=[], metadata={"scenario_id": "scenario-2"}),
    ], split="train", step=1)
    merged: dict[str, float] = {}
    for row in rows(model):
        merged.update(row)
    assert merged["data/step_num_scenarios"] == pytest.approx(2.0)
    assert merged["data/step_num_trajectories"] == pytest.approx(3.0)
    assert merged["data/step_num_groups_submitted"] == pytest.approx(2.0)
    assert merged["data/step_num_groups_trainable"] == pytest.approx(1.0)
    assert merged["data/cum/num_unique_scenarios"] == pytest.approx(2.0)
    assert not {"train/num_groups_submitted", "train/num_groups_trainable", "train/num_trajectories"} & set(merged)


async def test_costs_roll_up_and_accumulate(tmp_path):
    model = model_at(tmp_path)
    await model.log(trajectories=None, split="train", step=1,
                    metrics={"costs/train/prefill": 0.2, "costs/train/sample": 0.3})
    await model.log(trajectories=None, split="train", step=2, metrics={"costs/train/prefill": 0.1})
    first, second = rows(model)
    assert first["costs/train/prefill"] == pytest.approx(0.2) and first["costs/train/sample"] == pytest.approx(0.3)
    assert first["costs/train"] == pytest.approx(0.5) and first["costs/all"] == pytest.approx(0.5)
    assert first["costs/cum/all"] == pytest.approx(0.5)
    assert second["costs/train/prefill"] == pytest.approx(0.1)
    assert second["costs/cum/train/prefill"] == pytest.approx(0.3)
    assert second["costs/cum/train"] == pytest.approx(0.6) and second["costs/cum/all"] == pytest.approx(0.6)


async def test_cumulative_costs_survive_a_new_model_object(tmp_path):
    await model_at(tmp_path).log(trajectories=None, split="train", step=1, metrics={"costs/train/prefill": 0.25})
    model_2 = model_at(tmp_path)
    await model_2.log(trajectories=None, split="train", step=2, metrics={"costs/train/prefill": 0.75})
    first, second = rows(model_2)
    assert first["costs/cum/train/prefill"] == pytest.approx(0.25)
    assert second["costs/cum/train/prefill"] == pytest.approx(1.0)
    assert second["costs/cum/all"] == pytest.approx(1.0)


async def test_metrics_builder_resumes_its_state_before_use(tmp_path):
    model_1 = model_at(tmp_path)
    model_1.metrics_builder().add_data(scenario_ids=["scenario-a"])
    await model_1.log(trajectories=None, split="train", step=1, metrics={})
    model_2 = model_at(tmp_path)
    model_2.metrics_builder().add_data(scenario_ids=["scenario-b"])
    await model_2.log(trajectories=None, split="train", step=2, metrics={})
    first, second = rows(model_2)
    assert first["data/cum/num_unique_scenarios"] == pytest.approx(1.0)
    assert second["data/cum/num_unique_scenarios"] == pytest.approx(2.0)


async def test_direct_time_and_data_metrics_get_cumulative_variants(tmp_path):
    model = model_at(tmp_path)
    await model.log(trajectories=None, split="train", step=1,
                    metrics={"time/step_rollout_s": 1.5, "data/step_rollout_tokens": 10})
    entry = first_row(model)
    assert entry["time/step_rollout_s"] == pytest.approx(1.5) and entry["time/cum/rollout_s"] == pytest.approx(1.5)
    assert entry["data/step_rollout_tokens"] == pytest.approx(10)
    assert entry["data/cum/rollout_tokens"] == pytest.approx(10)


async def test_a_log_without_new_builder_metrics_adds_no_taxonomy_row(tmp_path):
    model = model_at(tmp_path)
    model.metrics_builder().add_data(scenario_ids=["scenario-a"])
    await model.log(trajectories=None, split="train", step=1,
                    metrics={"time/step_backend_train_s": 2.0, "data/step_trainable_assistant_tokens": 20.0})
    await model.log(trajectories=None, split="train", step=2, metrics={"loss/train": 1.0})
    got = rows(model)
    assert len(got) == 2
    assert got[0]["throughput/avg_trainer_tok_per_s"] == pytest.approx(10.0)
    assert got[0]["data/cum/num_unique_scenarios"] == pytest.approx(1.0)
    assert got[1]["loss/train"] == pytest.approx(1.0)
    assert "throughput/avg_trainer_tok_per_s" not in got[1] and "data/cum/num_unique_scenarios" not in got[1]


# -- TestWandbIntegration -------------------------------------------------------------------------
def should_log(model: Any) -> bool:
    """ART's rule, as its tests spell it."""
    return (model.report_metrics is None and "WANDB_API_KEY" in os.environ) or (
        model.report_metrics is not None and "wandb" in model.report_metrics)


async def test_no_wandb_run_without_an_api_key(tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    model = Model(name="test", project="test", base_path=str(tmp_path))
    await model.log([TrajectoryGroup(trajectories=[traj(0.5)])], split="val")
    assert wandb.run is None and model.history().num_rows == 1


def test_default_report_metrics_without_a_key_does_not_log(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert should_log(Model(name="test", project="test", base_path=str(tmp_path), report_metrics=None)) is False


def test_default_report_metrics_with_a_key_logs(tmp_path):
    model = Model(name="test", project="test", base_path=str(tmp_path), report_metrics=None)
    with patch.dict(os.environ, {"WANDB_API_KEY": "test-key"}):
        assert should_log(model) is True


def test_explicit_wandb_logs(tmp_path):
    assert should_log(Model(name="test", project="test", base_path=str(tmp_path), report_metrics=["wandb"])) is True


def test_empty_report_metrics_never_logs(tmp_path):
    model = Model(name="test", project="test", base_path=str(tmp_path), report_metrics=[])
    with patch.dict(os.environ, {"WANDB_API_KEY": "test-key"}):
        assert should_log(model) is False


# -- TestModelAttributes --------------------------------------------------------------------------
def test_base_path_defaults_to_dot_art():
    assert Model(name="test", project="test").base_path == ".art"


def test_base_path_can_be_set():
    assert Model(name="test", project="test", base_path="/custom/path").base_path == "/custom/path"


def test_report_metrics_defaults_to_none():
    assert Model(name="test", project="test").report_metrics is None


def test_report_metrics_can_be_set():
    assert Model(name="test", project="test", report_metrics=["wandb", "custom"]).report_metrics == ["wandb", "custom"]


# -- TestTrainSFTMetricsAggregation ---------------------------------------------------------------
def sft_model(tmp_path, run_name: str, **kw: Any) -> TrainableModel:
    return TrainableModel(run_name=run_name, name=run_name, project="test-project", base_model="gpt-4",
                          base_path=str(tmp_path), **kw)


async def test_train_sft_logs_each_batch_and_one_summary_row(tmp_path):
    model = sft_model(tmp_path, "test-sft")
    backend = MagicMock()

    async def train_sft(*args, **kwargs):
        for loss, grad in ((1.0, 0.5), (0.8, 0.4), (0.6, 0.3)):
            yield {"loss/train": loss, "loss/learning_rate": 1e-4, "loss/grad_norm": grad}

    backend._train_sft = train_sft
    backend._get_step = AsyncMock(side_effect=[0, 1])
    model._backend = backend
    await model.train_sft([Trajectory(reward=0.0, messages_and_choices=[
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]) for _ in range(3)])
    entries = rows(model)
    sft = [e for e in entries if "sft/gradient_step" in e]
    summary = [e for e in entries if "loss/train" in e]
    assert (len(entries), len(sft), len(summary)) == (4, 3, 1)
    assert [e["sft/gradient_step"] for e in sft] == [1.0, 2.0, 3.0]
    assert [e["sft/loss/train"] for e in sft] == [1.0, 0.8, 0.6]
    assert all(e["step"] == 1 and e["training_step"] == 1 for e in entries)
    assert summary[0]["loss/train"] == pytest.approx(0.8) and summary[0]["loss/grad_norm"] == pytest.approx(0.4)
    assert summary[0]["time/step_backend_train_s"] >= 0 and summary[0]["time/cum/backend_train_s"] >= 0


async def test_train_sft_is_one_step_whatever_the_batch_count(tmp_path):
    model = sft_model(tmp_path, "test-sft-step")
    backend = MagicMock()

    async def train_sft(*args, **kwargs):
        for i in range(5):
            yield {"loss": 1.0 - i * 0.1}

    backend._train_sft = train_sft
    backend._get_step = AsyncMock(side_effect=[0, 1])
    model._backend = backend
    await model.train_sft([traj(0.0, f"msg{i}") for i in range(10)])
    history = model.history()
    assert history.num_rows == 6  # 5 SFT rows and 1 summary row
    assert set(history["step"].to_pylist()) == {1} and set(history["training_step"].to_pylist()) == {1}
    assert [v for v in history["sft/gradient_step"].to_pylist() if v is not None] == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_train_sft_with_no_batches_logs_nothing(tmp_path):
    model = sft_model(tmp_path, "test-sft-empty")
    backend = MagicMock()

    async def train_sft(*args, **kwargs):
        return
        yield

    backend._train_sft = train_sft
    model._backend = backend
    await model.train_sft([])
    assert model.history().num_rows == 0


async def test_train_sft_logs_every_gradient_step(tmp_path):
    model = sft_model(tmp_path, "test-sft-every-step")
    backend = MagicMock()

    async def train_sft(*args, **kwargs):
        for i in range(5):
            yield {"loss/train": 1.0 - i * 0.1}

    backend._train_sft = train_sft
    backend._get_step = AsyncMock(side_effect=[0, 1])
    model._backend = backend
    await model.train_sft([])
    got = rows(model)
    assert [r["sft/gradient_step"] for r in got if "sft/gradient_step" in r] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len([r for r in got if "loss/train" in r]) == 1


async def test_train_sft_with_remote_metric_logging_writes_no_local_history(tmp_path):
    class RemoteLoggingBackend:
        def __init__(self) -> None:
            self.dev_config = None

        def logs_sft_metrics_remotely(self) -> bool:
            return True

        async def _get_step(self, _model):
            return 0

        async def _train_sft(self, _model, _trajectories, _config, dev_config, _verbose):
            self.dev_config = dev_config
            yield {"loss/train": 1.0}
            yield {"loss/train": 0.5}

    backend = RemoteLoggingBackend()
    model = sft_model(tmp_path, "test-sft-remote")
    model._backend = backend
    await model.train_sft([])
    assert model.history().num_rows == 0
    assert backend.dev_config is not None
    assert backend.dev_config["metric_logging"]["enabled"] is True
    assert backend.dev_config["metric_logging"]["target_training_step"] == 1


def test_the_port_uses_artstore():
    assert Model is art.Model and TrainableModel is art.TrainableModel
