"""Model and TrainableModel: ART's user API, a thin front over Store, Run and the writer.

    model = TrainableModel(name="agent-001", project="email-search", base_model="Qwen/...")
    await model.log(groups, split="val")           # one all-or-nothing commit
    await model.train(groups, config=TrainConfig())  # needs `await model.register(backend)`

The store is the record; wandb (when asked for) mirrors each history row after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pydantic

from artstore.art.training import Backend, TrainConfig
from artstore.checkpoints import pruning
from artstore.checkpoints.retention import Plan, Policy
from artstore.checkpoints.table import Checkpoint
from artstore.errors import BackendError
from artstore.log.commit import DEFAULT_RETENTION, LogRecord, as_groups, write_log
from artstore.log.configs import ConfigLog, as_json
from artstore.names import check_segment
from artstore.read import step_summary
from artstore.read.run import Run
from artstore.read.store import Store
from artstore.records.trajectory import artstore_errors
from artstore.wandb_mirror import WandbMirror, wants_wandb


class Model(pydantic.BaseModel):
    """A model whose rollouts and metrics are logged to the store (ART's `art.Model`)."""

    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    project: str
    entity: str | None = None
    id: str | None = None
    config: Any = None
    trainable: bool = False
    base_path: str = ".art"
    report_metrics: list[str] | None = None
    # Spelled as Lance spells them (values may be str, int, float or bool); never dumped or printed.
    storage_options: dict[str, str | int | float | bool] | None = pydantic.Field(default=None, exclude=True, repr=False)
    allow_nonfinite_rewards: bool = False
    retention: timedelta = DEFAULT_RETENTION

    _store: Store | None = pydantic.PrivateAttr(default=None)
    _mirror: WandbMirror | None = pydantic.PrivateAttr(default=None)
    _backend: Any = pydantic.PrivateAttr(default=None)
    _stored_config: dict[str, str] = pydantic.PrivateAttr(default_factory=dict)  # source -> JSON last stored

    def __init__(self, /, **data: Any) -> None:
        with artstore_errors():  # InvalidNameError / ValidationError naming the field, not pydantic's
            super().__init__(**data)

    @pydantic.field_validator("name", "project", mode="before")
    @classmethod
    def _simple_name(cls, v: Any) -> str:
        return check_segment("", v)  # the field's name is added by artstore_errors

    @pydantic.field_validator("base_path", mode="before")
    @classmethod
    def _path(cls, v: Any) -> str:
        return str(v)

    # -- where the run lives -------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.base_path, self.storage_options, self.retention)
        return self._store

    @property
    def run(self) -> Run:
        """The read side of this model's run."""
        return self.store.run(self.project, self.name)

    # -- ART's API ------------------------------------------------------------------------------
    async def get_step(self) -> int:
        """The current training step: 0 for a model that is not trainable."""
        return 0

    def get_step_sync(self) -> int:
        return 0

    async def log(self, trajectories: Any = None, split: str = "val", *, metrics: Mapping[str, float] | None = None,
                  step: int | None = None, log_id: str | None = None) -> LogRecord:
        """Store trajectory groups (a group, a list of groups, or a list of trajectories) and their
        metrics as one commit, then mirror the history row to wandb if asked. The default step
        is `get_step()`. A retried call with the same `log_id` stores nothing new."""
        groups = as_groups(trajectories)  # consume generators here, once, on the caller's thread
        if step is None:
            step = await self.get_step()
        record = await asyncio.to_thread(self._write, groups, split, metrics, step, log_id)
        self._report(record)
        return record

    def log_sync(self, trajectories: Any = None, split: str = "val", *, metrics: Mapping[str, float] | None = None,
                 step: int | None = None, log_id: str | None = None) -> LogRecord:
        """`log()` for scripts without an event loop."""
        groups = as_groups(trajectories)
        record = self._write(groups, split, metrics, self.get_step_sync() if step is None else step, log_id)
        self._report(record)
        return record

    def history(self) -> Any:
        """The run's history as a pyarrow.Table (see `Run.history`)."""
        return self.run.history()

    # -- internals ------------------------------------------------------------------------------
    def _store_config(self, source: str, config: Any, step: int) -> None:
        """Store `config` with the run when it differs from the last stored (see `artstore.log.configs`):
        read once per model object and source, then compared in memory."""
        text = as_json(config)
        if self._stored_config.get(source) != text:
            ConfigLog(self.run.location).record(source, text, step, known=self._stored_config.get(source))
            self._stored_config[source] = text

    def _write(self, groups: list, split: str, metrics: Mapping[str, float] | None, step: int,
               log_id: str | None) -> LogRecord:
        location = self.run.location
        if self.config is not None:
            self._store_config("model", self.config, step)
        record = write_log(location, groups, split=split, step=step, metrics=metrics, log_id=log_id,
                           allow_nonfinite_rewards=self.allow_nonfinite_rewards, retention=self.retention)
        if record.created:  # keep a cached step summary current without reading (see step_summary)
            step_summary.note_log(location, record.logs_version, record.step, record.metrics)
        return record

    def _report(self, record: LogRecord) -> None:
        if not record.created or not wants_wandb(self.report_metrics):
            return
        if self._mirror is None:
            self._mirror = WandbMirror(self.project, self.name, self._wandb_config())
        self._mirror.log(record.metrics, record.step)

    def _wandb_config(self) -> dict[str, Any]:
        # storage_options is excluded: secrets never reach wandb.
        return self.model_dump(mode="json", exclude={"storage_options", "retention"})


class TrainableModel(Model):
    """A model that is trained (ART's `art.TrainableModel`): its step is its latest checkpoint."""

    trainable: bool = True
    base_model: str

    async def register(self, backend: Backend) -> None:
        """Give the model a training backend (e.g. `trainer.LocalBackend()`)."""
        self._backend = backend
        await backend.register(self)

    @property
    def backend(self) -> Backend | None:
        return self._backend

    async def get_step(self) -> int:
        """With a backend, the backend's step; else the latest ready checkpoint in the store (0 if none)."""
        if self._backend is not None:
            return await self._backend._get_step(self)
        return await asyncio.to_thread(self.get_step_sync)

    def get_step_sync(self) -> int:
        return self.run.latest_checkpoint_step() or 0

    async def train(self, trajectory_groups: Any, config: TrainConfig | None = None,
                    _config: dict[str, Any] | None = None, verbose: bool = False) -> LogRecord | None:
        """Log the groups (split "train") at the current step, train one step with the backend,
        then log the training metrics (averaged over what the backend yields) at the new step."""
        if self._backend is None:
            raise BackendError(
                f"{self.project}/{self.name} has no training backend: call "
                "`await model.register(trainer.LocalBackend())` before train()"
            )
        groups = as_groups(trajectory_groups)
        config = config or TrainConfig()
        await asyncio.to_thread(self._store_config, "train", config, await self.get_step())
        await self.log(groups, split="train")
        sums: dict[str, list[float]] = {}
        async for m in self._backend._train_model(self, groups, config, _config or {}, verbose):
            for k, v in m.items():
                sums.setdefault(k, []).append(float(v))
        if not sums:
            return None
        averaged = {k: sum(v) / len(v) for k, v in sums.items()}
        return await self.log(None, split="train", metrics=averaged, step=await self.get_step())

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
        """ART's rule: keep the latest checkpoint and the one with the best (highest) per-step mean
        of `best_checkpoint_metric`; delete the other files. A metric absent from the run's metrics
        (or no metrics at all) raises RetentionError and deletes nothing."""
        return await self.apply_retention(Policy.art(best_checkpoint_metric))

    def _file_deleter(self, loop: asyncio.AbstractEventLoop) -> pruning.DeleteFiles:
        backend = self._backend
        if backend is None:
            return pruning.store_deleter(self.run)

        def delete(steps: list[int], live_steps: list[int]) -> None:
            keep = sorted(set(live_steps) - set(steps))
            asyncio.run_coroutine_threadsafe(backend._delete_checkpoint_files(self, keep), loop).result()
        return delete
