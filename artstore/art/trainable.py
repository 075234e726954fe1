"""TrainableModel: ART 0.5.23's `art.TrainableModel`.

    model = TrainableModel(name="agent-001", project="email-search", run_name="run-7",
                           base_model="Qwen/Qwen2.5-0.5B-Instruct")
    await model.register(backend)            # the backend gives the inference endpoint
    result = await backend.train(model, groups, learning_rate=5e-6)
    await model.log(groups, metrics=result.metrics, step=result.step, split="train")
    await model.delete_checkpoints()         # keep best val/reward + latest

`run_name` names the run's folder, `{base_path}/{project}/models/{run_name}/`; `name` is the alias
the inference server serves. ART 0.5.23 requires `run_name`; artstore defaults it to `name`, so
0.5.9 scripts (one name for both) keep working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import pydantic

from artstore.art.model import Model
from artstore.art.training import Backend, TrainConfig
from artstore.art.types import LoRAConfig, TrainSFTConfig
from artstore.checkpoints import pruning
from artstore.checkpoints.retention import Plan, Policy
from artstore.checkpoints.table import Checkpoint
from artstore.errors import BackendError, UnsupportedError
from artstore.log.commit import LogRecord, as_groups
from artstore.names import check_segment
from artstore.records.metric_names import SFT_SPLIT
from artstore.records.metrics_builder import MetricsBuilder

CostCalculator = Callable[[int | None, int | None, str], dict[str, float]]  # (prompt, completion tokens, context)
SFT_GRADIENT_STEP = "gradient_step"


def _no_costs(_prompt: int | None, _completion: int | None, _context: str) -> dict[str, float]:
    return {}


class TrainableModel(Model):
    """A model that is trained (ART's `art.TrainableModel`): its step is its latest checkpoint."""

    trainable: bool = True
    base_model: str
    run_name: str = ""  # "" -> `name` (ART 0.5.23 requires it; see the module doc)
    lora_config: LoRAConfig | None = None

    _cost_calculator: CostCalculator | None = pydantic.PrivateAttr(default=None)  # None: no costs
    # ART's unstable `_internal_config` (engine and serving settings): kept for the backend to read.
    _internal_config: dict[str, Any] | None = pydantic.PrivateAttr(default=None)

    def __init__(self, /, **data: Any) -> None:
        internal = data.pop("_internal_config", None)
        super().__init__(**data)
        self._internal_config = internal

    @pydantic.model_validator(mode="after")
    def _default_run_name(self) -> TrainableModel:
        if not self.run_name:
            object.__setattr__(self, "run_name", self.name)
        check_segment("run_name", self.run_name)
        return self

    def _storage_name(self) -> str:
        return self.run_name

    # -- backend --------------------------------------------------------------------------------
    async def register(self, backend: Backend, _openai_client_config: Any = None) -> None:
        """Give the model its backend (e.g. `trainer.LocalBackend()`); when the backend serves
        inference, take its endpoint (see `artstore.art.training` for the protocol)."""
        await self._reset_inference()
        await super().register(backend)
        prepare = getattr(backend, "_prepare_backend_for_training", None)
        if not callable(prepare):
            return
        base_url, api_key = await prepare(self, _openai_client_config)
        self.inference_base_url, self.inference_api_key = base_url, api_key
        named = getattr(backend, "_model_inference_name", None)
        self.inference_model_name = (named(self) if callable(named) else None) or self.name

    async def _reset_inference(self) -> None:
        client, self._openai_client = self._openai_client, None
        self.inference_base_url = self.inference_api_key = self.inference_model_name = None
        if client is not None:
            await client.close()

    async def get_step(self) -> int:
        """With a backend, the backend's step; else the latest ready checkpoint in the store (0 if none)."""
        if self._backend is not None:
            return await self._backend._get_step(self)
        return await asyncio.to_thread(self.get_step_sync)

    def get_step_sync(self) -> int:
        return self.run.latest_checkpoint_step() or 0

    # -- costs ----------------------------------------------------------------------------------
    @property
    def cost_calculator(self) -> CostCalculator:
        return self._cost_calculator or _no_costs

    def set_cost_calculator(self, calculator: CostCalculator | None) -> None:
        """`calculator(prompt_tokens, completion_tokens, cost_context) -> {"costs/...": usd}`;
        `record_completion_costs` adds its result to the active metrics builder."""
        self._cost_calculator = calculator

    def record_completion_costs(self, response: Any) -> None:
        """Add the cost of one chat completion (its `usage`) to the active metrics builder, if
        one is active (`with model.metrics_builder("train").activate_context(): ...`)."""
        try:
            builder = MetricsBuilder.get_active()
        except LookupError:
            return
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0) * max(len(getattr(response, "choices", None) or []), 1)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        context = builder.cost_context.strip("/")
        for key, usd in (self.cost_calculator(prompt, completion, context) if context else {}).items():
            if key.startswith("costs/"):
                builder.add_cost(key.removeprefix("costs/"), float(usd))

    # -- training -------------------------------------------------------------------------------
    async def train(self, trajectory_groups: Any, config: TrainConfig | None = None,
                    _config: dict[str, Any] | None = None, verbose: bool = False) -> LogRecord | None:
        """(0.5.9's API; 0.5.23 uses `backend.train(model, groups, ...)` then `model.log`.) Log the
        groups (split "train") at the current step, train one step with the backend, then log
        the training metrics (averaged over what the backend yields) at the new step."""
        backend = self._training_backend("train()")
        groups = as_groups(trajectory_groups)
        config = config or TrainConfig()
        await asyncio.to_thread(self._store_config, "train", config, await self.get_step())
        await self.log(groups, split="train")
        sums: dict[str, list[float]] = {}
        async for m in backend._train_model(self, groups, config, _config or {}, verbose):
            for k, v in m.items():
                sums.setdefault(k, []).append(float(v))
        if not sums:
            return None
        averaged = {k: sum(v) / len(v) for k, v in sums.items()}
        return await self.log(None, split="train", metrics=averaged, step=await self.get_step())

    async def train_sft(self, trajectories: Iterable[Any], config: TrainSFTConfig | None = None,
                        _config: dict[str, Any] | None = None, verbose: bool = False,
                        log_metrics: bool = True) -> None:
        """Supervised fine-tuning through the backend's `_train_sft`. As ART 0.5.23 logs it: each
        gradient step's metrics on split "sft" (`sft/<k>`, with `sft/gradient_step`) at the next
        checkpoint's step, then their averages with `time/step_backend_train_s` on "train" at the
        step after training. A backend whose `logs_sft_metrics_remotely()` is true logs them
        itself (told the step in `metric_logging.target_training_step`); nothing is logged here."""
        backend = self._training_backend("train_sft()")
        train_sft = getattr(backend, "_train_sft", None)
        if not callable(train_sft):
            raise UnsupportedError(f"{type(backend).__name__} has no _train_sft: it cannot fine-tune with SFT")
        remote = getattr(type(backend), "logs_sft_metrics_remotely", None)
        remote = bool(log_metrics and callable(remote) and remote(backend))  # the backend logs them itself
        metric_logging: dict[str, Any] = {"enabled": bool(log_metrics)}
        if remote:
            metric_logging["target_training_step"] = await self.get_step() + 1
        dev_config = {**(_config or {}), "metric_logging": metric_logging}
        samples: list[dict[str, float]] = []
        sft_step: int | None = None
        started = time.monotonic()
        async for metrics in train_sft(self, trajectories, config or TrainSFTConfig(), dev_config, verbose):
            samples.append(metrics)
            if log_metrics and not remote:
                if sft_step is None:
                    sft_step = await self.get_step() + 1
                await self.log(None, split=SFT_SPLIT, step=sft_step,
                               metrics={SFT_GRADIENT_STEP: float(len(samples)), **metrics})
        elapsed = time.monotonic() - started
        if samples and log_metrics and not remote:
            keys = dict.fromkeys(k for s in samples for k in s)
            averaged = {k: sum(float(s[k]) for s in samples if k in s) / sum(1 for s in samples if k in s)
                        for k in keys}
            averaged["time/step_backend_train_s"] = elapsed
            await self.log(None, split="train", metrics=averaged, step=await self.get_step())

    def _training_backend(self, what: str) -> Backend:
        if self._backend is None:
            raise BackendError(
                f"{self.project}/{self.run_name} has no training backend: call "
                f"`await model.register(trainer.LocalBackend())` before {what}")
        return self._backend

    # -- checkpoints and retention ----------------------------------------------------------
    def register_checkpoint(self, step: int, *, uri: str | None = None, linked: bool = False,
                            size_bytes: int | None = None) -> Checkpoint:
        """Record the complete checkpoint of `step` (files at `run.checkpoint_uri(step)` unless `uri`)."""
        return self.run.register_checkpoint(step, base_model=self.base_model, uri=uri, linked=linked,
                                            size_bytes=size_bytes)

    def retention_plan(self, policy: Policy | None = None) -> Plan:
        """What `policy` (default: the run's stored policy) would keep and delete, and why."""
        return self.run.retention_plan(policy)

    async def apply_retention(self, plan_or_policy: Plan | Policy | None = None) -> Plan:
        """Apply a plan or policy: finish interrupted prunes, record the intent, delete the files
        (through the backend when one is registered, else through fsspec), then mark the rows
        deleted with time, reason and policy. Returns the plan applied."""
        run = self.run
        target = plan_or_policy if isinstance(plan_or_policy, Plan) else run._policy(plan_or_policy)
        return await asyncio.to_thread(pruning.apply, run, target, self._file_deleter(asyncio.get_running_loop()))

    async def delete_checkpoints(self, best_checkpoint_metric: str = "val/reward") -> Plan:
        """ART's rule: keep the latest checkpoint and the step with the best (highest) per-step
        mean of `best_checkpoint_metric` over the whole history; delete every other checkpoint,
        those with no value at their own step included. Checkpoint folders without a row (a
        user's backend wrote them) are found, given rows and deleted the same way. A metric
        absent from the run's metrics (or no metrics at all) raises RetentionError and deletes
        nothing (ART keeps only the latest then)."""
        return await self.apply_retention(Policy.art(best_checkpoint_metric))

    def _file_deleter(self, loop: asyncio.AbstractEventLoop) -> pruning.DeleteFiles:
        backend = self._backend
        if backend is None:
            return pruning.store_deleter(self.run)

        def delete(steps: list[int], live_steps: list[int]) -> None:
            keep = sorted(set(live_steps) - set(steps))
            asyncio.run_coroutine_threadsafe(backend._delete_checkpoint_files(self, keep), loop).result()
        return delete
