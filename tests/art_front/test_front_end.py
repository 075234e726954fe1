"""ART 0.5.23's front end after `import artstore as art`: run_name, inference endpoints, the
rollout pattern (TrajectoryGroup over awaitables, gather_trajectory_groups), trajectory helpers,
state in the store, retry, and the typed errors where artstore differs."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import artstore as art
from artstore.storage import files


def trainable(base_path, **kw):
    kw = {"name": "agent", "project": "p", "run_name": "run-1", "base_model": "b", **kw}
    return art.TrainableModel(base_path=str(base_path), report_metrics=[], **kw)


class ServingBackend:
    """A backend that serves inference (as trainer.LocalBackend does): ART's protocol."""

    def __init__(self, base_url: str = "http://127.0.0.1:9/v1"):
        self.base_url, self.step, self.registered = base_url, 0, []

    async def register(self, model):
        self.registered.append(model.run_name)

    async def _get_step(self, model):
        return self.step

    async def _prepare_backend_for_training(self, model, config):
        return self.base_url, "secret-key"

    def _model_inference_name(self, model, step=None):
        return f"{model.name}@{self.step if step is None else step}"

    async def _delete_checkpoint_files(self, model, steps_to_keep):
        pass


class SftBackend(ServingBackend):
    """Fine-tunes by counting: each gradient step yields its loss, the step advances at the end."""

    async def _train_sft(self, model, trajectories, config, dev_config, verbose=False):
        for i, _ in enumerate(list(trajectories)):
            yield {"loss/train": 1.0 / (i + 1), "loss/learning_rate": config.learning_rate}
        self.step += 1


@pytest.fixture
def chat_server():
    """A real OpenAI-compatible HTTP endpoint on 127.0.0.1 that records what it was asked."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers["Authorization"], "body": body})
            payload = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": "42"}}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()
    server.server_close()


# -- run_name, inference ----------------------------------------------------------------------
async def test_run_name_names_the_run_folder_and_name_is_the_serving_alias(base_path, make_trajectory):
    model = trainable(base_path)
    await model.log([art.TrajectoryGroup([make_trajectory(1.0)])], split="val")
    assert model.run.location.uri.endswith("/p/models/run-1")
    model.flush()  # the group commit lands (the default mode)
    assert "logs.lance" in files.list_dir(model.run.location)  # the journal: data tables fill on fold
    assert model.run.trajectories().num_rows == 1
    assert model.get_inference_name() == "agent" and model.get_inference_name(step=3) == "agent@3"
    assert art.TrainableModel(name="agent", project="p", base_model="b").run_name == "agent"  # 0.5.9 scripts


def test_bad_run_name_is_rejected_naming_the_field(base_path):
    with pytest.raises(art.InvalidNameError, match="run_name"):
        trainable(base_path, run_name="../escape")


async def test_register_takes_the_backends_endpoint_and_the_client_calls_it(base_path, chat_server):
    url, seen = chat_server
    model = trainable(base_path)
    backend = ServingBackend(url)
    backend.step = 7
    await model.register(backend)
    assert model.backend() is backend and backend.registered == ["run-1"]
    assert (model.inference_base_url, model.inference_api_key, model.inference_model_name) == (url, "secret-key", "agent@7")
    assert model.get_inference_name(step=2) == "agent@2"
    response = await model.openai_client().chat.completions.create(
        model=model.get_inference_name(), messages=[{"role": "user", "content": "17 + 25?"}])
    assert response.choices[0].message.content == "42"
    assert seen == [{"path": "/v1/chat/completions", "auth": "Bearer secret-key",
                     "body": {"model": "agent@7", "messages": [{"role": "user", "content": "17 + 25?"}]}}]
    assert model.openai_client() is model.openai_client()
    params = model.litellm_completion_params(step=3)
    assert (params["model"], params["base_url"], params["api_key"], params["temperature"]) == (
        "hosted_vllm/agent@3", url, "secret-key", 1)
    assert "secret-key" not in repr(model)


async def test_prompted_model_uses_its_own_endpoint_and_model_name(base_path, chat_server):
    url, seen = chat_server
    model = art.Model(name="gemini", project="p", base_path=str(base_path), inference_base_url=url,
                      inference_api_key="k", inference_model_name="google/gemini-2.5-pro")
    await model.openai_client().chat.completions.create(model=model.get_inference_name(), messages=[])
    assert seen[0]["body"]["model"] == "google/gemini-2.5-pro"
    assert model.litellm_completion_params() == {"model": "google/gemini-2.5-pro", "base_url": url,
                                                 "api_key": "k", "temperature": 1}


async def test_missing_backend_or_endpoint_raises_typed_errors_that_say_what_to_do(base_path):
    model = trainable(base_path)
    with pytest.raises(art.ModelNotRegisteredError, match="register"):
        model.backend()
    with pytest.raises(art.InferenceUnavailableError, match="register"):
        model.openai_client()
    with pytest.raises(art.InferenceUnavailableError, match="inference_base_url"):
        art.Model(name="m", project="p").openai_client()

    class NoServing:
        async def register(self, model):
            pass

    await model.register(NoServing())
    with pytest.raises(art.InferenceUnavailableError, match="serves no inference"):
        model.openai_client()
    assert isinstance(model.backend(), NoServing)


# -- the rollout pattern ------------------------------------------------------------------------
async def rollout(reward: float, make_trajectory, fail: bool = False) -> art.Trajectory:
    await asyncio.sleep(0.001 * reward)
    if fail:
        raise TimeoutError("rollout timed out")
    return make_trajectory(reward)


async def test_gather_trajectory_groups_over_awaitable_groups_keeps_failures_within_max(make_trajectory):
    groups = await art.gather_trajectory_groups(
        (art.TrajectoryGroup(rollout(r, make_trajectory, fail=(s == 1 and r == 2)) for r in range(3))
         for s in range(3)),
        pbar_desc="gather", max_exceptions=1,
    )
    assert [len(g) for g in groups] == [3, 2, 3]
    assert [e.type for e in groups[1].exceptions] == ["<class 'TimeoutError'>"]
    assert sorted(t.reward for t in groups[0]) == [0.0, 1.0, 2.0]


async def test_gather_raises_past_max_exceptions(make_trajectory):
    with pytest.raises(TimeoutError):
        await art.gather_trajectory_groups(
            [art.TrajectoryGroup([rollout(1, make_trajectory, fail=True), rollout(2, make_trajectory, fail=True)])],
            max_exceptions=1)


async def test_after_each_replaces_or_drops_groups(make_trajectory):
    async def after_each(group):
        return None if group.trajectories[0].reward == 0 else [group, copy.copy(group)]

    groups = await art.gather_trajectory_groups(
        (art.TrajectoryGroup([rollout(r, make_trajectory)]) for r in (0, 1)), after_each=after_each)
    assert [g.trajectories[0].reward for g in groups] == [1.0, 1.0]


async def test_gather_trajectories_returns_exceptions_in_place(make_trajectory):
    results = await art.gather_trajectories(
        [rollout(1, make_trajectory), rollout(2, make_trajectory, fail=True)], max_exceptions=1)
    assert isinstance(results[0], art.Trajectory) and isinstance(results[1], TimeoutError)


async def test_trajectory_group_batches_yield_full_batches_then_the_rest(make_trajectory):
    batches = [b async for b in art.trajectory_group_batches(
        (art.TrajectoryGroup([rollout(r, make_trajectory)]) for r in range(5)), batch_size=2)]
    assert [len(b) for b in batches] == [2, 2, 1]
    resumed = [b async for b in art.trajectory_group_batches(
        (art.TrajectoryGroup([rollout(r, make_trajectory)]) for r in range(5)), batch_size=2, skip_batches=2)]
    assert [[g.trajectories[0].reward for g in b] for b in resumed] == [[4.0]]


async def test_art_quickstart_loop_runs_unchanged_but_for_the_import(base_path, make_trajectory):
    model = trainable(base_path)
    backend = ServingBackend()
    await model.register(backend)
    for step in range(3):
        backend.step = step
        groups = await art.gather_trajectory_groups(
            (art.TrajectoryGroup(rollout(r + s, make_trajectory) for r in range(2)) for s in range(2)),
            pbar_desc="gather", max_exceptions=0.1)
        result = art.TrainResult(step=step + 1, metrics={"loss/train": 0.1 * step})
        await model.log(groups, metrics=result.metrics, step=result.step, split="train")
    h = model.history()
    assert h["training_step"].to_pylist() == [1.0, 2.0, 3.0]
    assert h["data/cum/num_trajectories"].to_pylist() == [4.0, 8.0, 12.0]
    assert await model.get_step() == 2


# -- trajectories and groups --------------------------------------------------------------------
def test_group_iterates_over_trajectories_and_copy_does_not_share_lists(make_trajectory):
    group = art.TrajectoryGroup([make_trajectory(1.0), make_trajectory(0.0)], metadata={"k": 1}, logs=["a"])
    assert [t.reward for t in group] == [1.0, 0.0]
    copied = copy.copy(group)
    copied.trajectories.append(make_trajectory(2.0))
    copied.logs.append("b")
    copied.metadata["k"] = 2
    assert len(group) == 2 and group.logs == ["a"] and group.metadata == {"k": 1}
    assert copied.trajectories[0] is group.trajectories[0]
    deep = copy.deepcopy(group)
    assert deep == group and deep.trajectories[0] is not group.trajectories[0]
    group.log("note")
    assert group.logs == ["a", "note"]


def test_group_cannot_mix_trajectories_and_awaitables(make_trajectory):
    coroutine = rollout(1, make_trajectory)
    with pytest.raises(art.ValidationError, match="mix"):
        art.TrajectoryGroup([make_trajectory(1.0), coroutine])
    coroutine.close()


def test_messages_turn_choices_into_assistant_messages(make_trajectory):
    t = make_trajectory(1.0)
    messages = t.messages()
    assert all(isinstance(m, dict) and m["content"] is not None for m in messages)
    choices = [i for i, m in enumerate(t.messages_and_choices) if isinstance(m, art.Choice)]
    assert choices and all(messages[i]["role"] == "assistant" for i in choices)
    with_calls = [messages[i] for i in choices if t.messages_and_choices[i].message.tool_calls]
    assert with_calls and all("tool_calls" in m for m in with_calls)


async def test_finish_sets_duration_and_track_duration_sums(make_trajectory):
    t = art.Trajectory(reward=1.0)
    async with t.track_duration("judge"):
        await asyncio.sleep(0.01)
    async with t.track_duration("judge"):
        await asyncio.sleep(0.01)
    assert t.metrics["judge_duration"] >= 0.02
    assert t.finish() is t and t.metrics["duration"] >= 0.02


async def test_a_trajectory_read_back_equals_the_one_logged_despite_start_time(base_path, make_trajectory):
    model = trainable(base_path)
    group = art.TrajectoryGroup([make_trajectory(1.0)])
    await model.log([group], split="val")
    assert model.run.groups() == [group]


# -- state, wandb config, retry, sft ------------------------------------------------------------
def test_state_is_merged_deeply_and_survives_model_recreation(base_path):
    model = trainable(base_path)
    assert model.read_state() is None
    model.overwrite_state({"step": 1, "data": {"offset": 10}})
    assert model.merge_state({"data": {"seen": 3}}) == {"step": 1, "data": {"offset": 10, "seen": 3}}
    assert trainable(base_path).read_state() == {"step": 1, "data": {"offset": 10, "seen": 3}}
    with pytest.warns(DeprecationWarning):
        model.write_state({"step": 2})
    assert model.read_state() == {"step": 2}
    with pytest.raises(art.ValidationError, match="state"):
        model.merge_state({"bad": object()})


def test_state_merges_from_many_writers_lose_nothing(base_path):
    def writer(i):
        m = trainable(base_path)
        for j in range(5):
            m.merge_state({f"w{i}": {f"k{j}": j}})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trainable(base_path).read_state() == {f"w{i}": {f"k{j}": j for j in range(5)} for i in range(4)}


def test_wandb_config_merges_and_refuses_to_change_a_set_value(base_path):
    model = trainable(base_path)
    model.update_wandb_config({"lr": 1e-5, "data": {"n": 10}})
    model.update_wandb_config({"data": {"split": "v1"}, "lr": 1e-5})
    assert model._wandb_config == {"lr": 1e-5, "data": {"n": 10, "split": "v1"}}
    with pytest.raises(art.ValidationError, match="data.n"):
        model.update_wandb_config({"data": {"n": 11}})


async def test_retry_retries_with_backoff_then_raises_the_last_error():
    calls, retried = [], []

    @art.retry(max_attempts=3, delay=0.001, exceptions=(ConnectionError,), on_retry=lambda e, n: retried.append(n))
    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    assert await flaky() == "ok" and retried == [1, 2]

    @art.retry(max_attempts=2, delay=0.001)
    def always():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        always()


async def test_train_sft_logs_each_gradient_step_then_the_average(base_path, make_trajectory):
    model = trainable(base_path)
    await model.register(SftBackend())
    await model.train_sft([make_trajectory(1.0), make_trajectory(0.5)], art.TrainSFTConfig(learning_rate=1e-4))
    rows = [{k: v for k, v in r.items() if v is not None and k != "recorded_at"} for r in model.history().to_pylist()]
    assert rows[0] == {"step": 1, "sft/gradient_step": 1.0, "sft/loss/train": 1.0, "sft/loss/learning_rate": 1e-4,
                       "training_step": 1.0}  # 0.5.23 prefixes every key of the sft split
    assert rows[1]["sft/gradient_step"] == 2.0 and rows[1]["sft/loss/train"] == 0.5
    assert rows[2]["step"] == 1 and rows[2]["loss/train"] == 0.75 and rows[2]["time/step_backend_train_s"] >= 0
    assert "time/cum/backend_train_s" in rows[2]


async def test_sft_without_backend_support_is_a_typed_error(base_path, make_trajectory):
    model = trainable(base_path)
    with pytest.raises(art.BackendError, match="register"):
        await model.train_sft([make_trajectory(1.0)])
    await model.register(ServingBackend())
    with pytest.raises(art.UnsupportedError, match="_train_sft"):
        await model.train_sft([make_trajectory(1.0)])


def test_train_config_takes_0_5_23_fields_and_beta_is_its_kl_coefficient():
    config = art.TrainConfig(learning_rate=1e-5, kl_penalty_coef=0.1, optimizer_save_interval=2)
    assert config.beta == 0.1 and art.TrainConfig(beta=0.2).kl_penalty_coef == 0.2
    result = art.LocalTrainResult(step=3, metrics={"loss/train": 0.1}, checkpoint_path="/x/0003")
    assert isinstance(result, art.TrainResult) and result.step == 3


async def test_trained_models_client_adds_completion_costs_to_the_next_log(base_path, chat_server):
    url, _ = chat_server
    model = trainable(base_path)
    await model.register(ServingBackend(url))
    model.set_cost_calculator(lambda prompt, completion, context: {
        f"costs/{context}/prefill": prompt * 1e-6, f"costs/{context}/sample": completion * 1e-6})
    with model.metrics_builder("train").activate_context():
        await model.openai_client().chat.completions.create(model=model.get_inference_name(), messages=[])
    await model.openai_client().chat.completions.create(model="x", messages=[])  # no active builder: not priced
    record = await model.log(None, split="train", metrics={"loss/train": 0.1})
    assert record.metrics["costs/train/prefill"] == pytest.approx(5e-6)
    assert record.metrics["costs/train"] == pytest.approx(6e-6) == record.metrics["costs/cum/all"]


async def test_backend_that_times_steps_adds_wall_time_and_gpu_cost_once_per_step(base_path, make_trajectory):
    class TimedBackend(ServingBackend):
        def supports_automatic_train_step_metrics(self):
            return True

        def automatic_gpu_cost_per_hour_usd(self, model):
            return 3600.0  # one dollar per second

    model = trainable(base_path)
    await model.register(TimedBackend())
    first = await model.log([art.TrajectoryGroup([make_trajectory(1.0)])], split="train", step=1)
    again = await model.log(None, split="train", metrics={"loss/train": 0.1}, step=1)
    assert first.metrics["costs/gpu"] == pytest.approx(first.metrics["time/step_wall_s"])
    assert "time/step_wall_s" not in again.metrics and "costs/gpu" not in again.metrics


async def test_trajectory_group_keeps_the_given_order_and_returns_exceptions_when_asked(make_trajectory):
    group = await art.trajectory_group([rollout(3, make_trajectory), make_trajectory(9.0), rollout(1, make_trajectory)],
                                       metadata={"s": 1})
    assert [t.reward for t in group] == [3.0, 9.0, 1.0] and group.metadata == {"s": 1}
    with pytest.raises(TimeoutError):
        await art.trajectory_group([rollout(1, make_trajectory, fail=True), rollout(2, make_trajectory)])
    kept = await art.trajectory_group([rollout(1, make_trajectory, fail=True), rollout(2, make_trajectory)],
                                      return_exceptions=True)
    assert [t.reward for t in kept] == [2.0] and [e.message for e in kept.exceptions] == ["rollout timed out"]


def test_state_table_stays_compact_after_many_changes(base_path):
    from artstore.storage import fragments

    model = trainable(base_path)
    for i in range(40):
        model.merge_state({"i": i})
    assert model.read_state() == {"i": 39}
    assert fragments.fragment_count(model.run.location.child("state.lance")) < 20


async def test_what_artstore_does_not_do_raises_a_typed_error_saying_what_instead(make_trajectory):
    coroutine = rollout(1, make_trajectory)
    with pytest.raises(art.UnsupportedError, match="messages_and_choices"):
        await art.trajectory(coroutine)
    builder = art.TrainableModel(name="m", project="p", base_model="b").metrics_builder()
    with pytest.raises(art.UnsupportedError, match="add_cost"):
        builder.add_response_cost("judge", object(), provider="openai", model_name="gpt-4.1")
    with pytest.raises(art.UnsupportedError, match="set_cost_calculator"):
        builder.register_model_pricing("m", prompt_per_million=1.0, completion_per_million=2.0)
