"""Model: ART 0.5.23's `art.Model`, a thin front over Store, Run and the writer.

    model = Model(name="gpt-4.1", project="email-search",
                  inference_base_url="https://api.openai.com/v1", inference_api_key=key)
    await model.log(groups, split="val")           # all or nothing (one journal row), 0.5.23's metric names

The store is the record: trajectories, the history row and the run's state (`read_state`,
`merge_state`, the metrics builder's running sums) all live in the run's Lance tables; wandb,
when asked for, mirrors each history row after the commit. `TrainableModel` is in
`artstore.art.trainable`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from collections.abc import Mapping
from contextvars import Token
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import pydantic

from artstore.art import inference
from artstore.art import state as state_mod
from artstore.errors import ModelNotRegisteredError, ValidationError
from artstore.log import group_commit
from artstore.log import sums as sums_mod
from artstore.log.commit import (
    DEFAULT_READER_WINDOW,
    DEFAULT_RETENTION,
    LogRecord,
    as_groups,
    write_log,
)
from artstore.log.configs import ConfigLog, as_json
from artstore.names import check_segment
from artstore.read import log_notes, step_summary
from artstore.read.run import Run
from artstore.read.store import Store
from artstore.records.metric_names import is_cumulative
from artstore.records.metrics import builder_for_split, check_extra, compute_metrics
from artstore.records.metrics_builder import MetricsBuilder
from artstore.records.trajectory import TrajectoryGroup, artstore_errors
from artstore.wandb_mirror import WandbMirror, wants_wandb

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from artstore.art.training import Backend


class Model(pydantic.BaseModel):
    """A model whose rollouts and metrics are logged to the store (ART's `art.Model`). Its run
    lives at `{base_path}/{project}/models/{name}/`."""

    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    name: str
    project: str
    entity: str | None = None
    id: str | None = None
    run_id: str | None = None
    config: Any = None
    trainable: bool = False
    # Where inference runs: given by the user for a prompted model, by the backend for a trained one.
    inference_api_key: str | None = pydantic.Field(default=None, repr=False)
    inference_base_url: str | None = None
    inference_model_name: str | None = None  # sent instead of `name` when set
    base_path: str = ".art"
    report_metrics: list[str] | None = None
    # Spelled as Lance spells them (values may be str, int, float or bool); never dumped or printed.
    storage_options: dict[str, str | int | float | bool] | None = pydantic.Field(default=None, exclude=True, repr=False)
    allow_nonfinite_rewards: bool = False
    retention: timedelta = DEFAULT_RETENTION
    reader_window: timedelta = DEFAULT_READER_WINDOW  # a journal run's physical versions (see Store)
    # "group" (the default): log() returns once its row is durable, and a background thread commits
    # the queued logs many at a time (`artstore.log.group_commit`); "sync": log() makes its own
    # Lance commit before it returns; None: ARTSTORE_COMMIT, else "group"
    commit: Literal["sync", "group"] | None = None

    _store: Store | None = pydantic.PrivateAttr(default=None)
    _mirror: WandbMirror | None = pydantic.PrivateAttr(default=None)
    _backend: Any = pydantic.PrivateAttr(default=None)
    _stored_config: dict[str, str] = pydantic.PrivateAttr(default_factory=dict)  # source -> JSON last stored
    _openai_client: Any = pydantic.PrivateAttr(default=None)
    _wandb_config: dict[str, Any] = pydantic.PrivateAttr(default_factory=dict)
    _metrics: MetricsBuilder = pydantic.PrivateAttr(default_factory=lambda: MetricsBuilder("train"))
    _metrics_lock: Any = pydantic.PrivateAttr(default_factory=threading.Lock)
    _sums: sums_mod.Tracker | None = pydantic.PrivateAttr(default=None)  # the builder's sums, read once
    _last_train_log: float = pydantic.PrivateAttr(default_factory=time.monotonic)  # for time/step_wall_s
    _last_train_step: int | None = pydantic.PrivateAttr(default=None)

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
    def _storage_name(self) -> str:
        """The run's folder name (ART's): `name` here, `run_name` for a TrainableModel."""
        return self.name

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.base_path, self.storage_options, self.retention, self.reader_window)
        return self._store

    @property
    def run(self) -> Run:
        """The read side of this model's run."""
        return self.store.run(self.project, self._storage_name())

    # -- backend and inference (ART 0.5.23) -----------------------------------------------------
    def backend(self) -> Backend:
        """The registered backend; ModelNotRegisteredError before `await model.register(...)`."""
        if self._backend is None:
            raise ModelNotRegisteredError(
                f"{self.project}/{self.name} is not registered with a backend: call `await model.register(backend)`")
        return self._backend

    async def register(self, backend: Backend) -> None:
        """Give the model a backend and let the backend know the model."""
        if self.config is not None and hasattr(self.config, "model_dump_json"):
            try:
                self.config.model_dump_json()
            except Exception as e:  # noqa: BLE001 - any serialisation failure means the same thing
                raise ValidationError("config", f"cannot be serialized to JSON: {e}") from e
        self._backend = backend
        await backend.register(self)

    def openai_client(self) -> AsyncOpenAI:
        """An AsyncOpenAI client for the model's inference endpoint (made once, then reused). A
        trainable model's client adds each chat completion's cost to the active metrics builder
        (see `TrainableModel.set_cost_calculator`)."""
        if self._openai_client is None:
            self._openai_client = inference.make_client(self)
            if self.trainable:
                self._openai_client = inference.CostRecordingClient(self._openai_client, self.record_completion_costs)
        return self._openai_client

    def record_completion_costs(self, response: Any) -> None:
        """Hook: a trainable model prices completions (`TrainableModel.record_completion_costs`)."""

    def safe_model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """`model_dump` with `config` set to None (ART's: a config may not serialise)."""
        return {**self.model_dump(*args, **kwargs), "config": None}

    def litellm_completion_params(self, step: int | None = None) -> dict[str, Any]:
        """Keyword arguments for `litellm.completion` (a step's checkpoint when `step` is given)."""
        return inference.litellm_params(self, step)

    def get_inference_name(self, step: int | None = None) -> str:
        """The model name to send to the inference endpoint (see `artstore.art.inference`)."""
        return inference.inference_name(self, step)

    # -- persistent state (in the store, safe with several writers) ----------------------------
    def read_state(self) -> dict[str, Any] | None:
        """The run's state (a JSON object), None when none was ever written. It holds the metrics
        builder's running sums under `_metrics_builder_state` once a log was made, as ART's does."""
        return state_mod.read(self.run.location)

    def overwrite_state(self, state: dict[str, Any]) -> None:
        """Replace the whole state with `state` (prefer `merge_state`). Without
        `_metrics_builder_state` the running sums start again from zero."""
        state_mod.dumps(state)  # a bad state raises here, before any read
        state_mod.update(self.run.location, lambda _current: dict(state))
        self._forget_sums()

    def write_state(self, state: dict[str, Any]) -> None:
        """Deprecated in ART 0.5.23: use `overwrite_state()` or `merge_state()`."""
        warnings.warn("write_state() is deprecated. Use overwrite_state() or merge_state() instead.",
                      DeprecationWarning, stacklevel=2)
        self.overwrite_state(state)

    def merge_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Deep-merge `state` into the stored state atomically; returns the merged state."""
        state_mod.dumps(state)
        merged = state_mod.update(self.run.location, lambda current: state_mod.deep_merge(current or {}, state))
        if state_mod.STATE_KEY in state:
            self._forget_sums()
        return merged

    # -- metrics builder and wandb -------------------------------------------------------------
    def metrics_builder(self, cost_context: str | None = None) -> MetricsBuilder:
        """The model's builder of step costs/times/counts (flushed into the next `log()`)."""
        return self._metrics if cost_context is None else self._metrics.for_cost_context(cost_context)

    def activate_metrics_context(self, cost_context: str) -> Token[MetricsBuilder]:
        return self.metrics_builder(cost_context).activate()

    def update_wandb_config(self, config: dict[str, Any]) -> None:
        """Merge `config` into the wandb run's config (now, or when the run starts). A key already
        set to another value raises ValidationError: wandb config is immutable once set."""
        if not isinstance(config, dict):
            raise ValidationError("config", f"must be a dict, got {type(config).__name__}")
        self._wandb_config = state_mod.merge_immutable(self._wandb_config, config)
        if self._mirror is not None:
            self._mirror.update_config(config)

    # -- logging -------------------------------------------------------------------------------
    async def get_step(self) -> int:
        """The current training step: 0 for a model that is not trainable."""
        return 0

    def get_step_sync(self) -> int:
        return 0

    async def log(self, trajectories: Any = None, split: str = "val", *, metrics: Mapping[str, float] | None = None,
                  step: int | None = None, log_id: str | None = None) -> LogRecord | None:
        """Store trajectory groups (a group, a list of groups, or a list of trajectories) and the
        history row ART 0.5.23 computes from them (`artstore.records.metrics`) as one journal row,
        all or nothing (committed with others in a group commit by default: `flush`), then mirror
        the row to wandb if asked. The default step is `get_step()`. A retried call
        with the same `log_id` stores nothing new. Nothing to log (no groups, no metrics): None."""
        groups = None if trajectories is None else as_groups(trajectories)  # consumed once, here
        if step is None:
            step = await self.get_step()
        record = await asyncio.to_thread(self._log, groups, split, metrics, step, log_id)
        self._report(record)
        return record

    def log_sync(self, trajectories: Any = None, split: str = "val", *, metrics: Mapping[str, float] | None = None,
                 step: int | None = None, log_id: str | None = None) -> LogRecord | None:
        """`log()` for scripts without an event loop."""
        groups = None if trajectories is None else as_groups(trajectories)
        record = self._log(groups, split, metrics, self.get_step_sync() if step is None else step, log_id)
        self._report(record)
        return record

    def flush(self) -> None:
        """Wait until this model's logs queued for a group commit (the default mode) are
        committed, so other processes see them and their records' `logs_version` is set; nothing
        to wait for with `commit="sync"`. Normal interpreter exit flushes too."""
        group_commit.flush(self.run.location)

    def history(self) -> Any:
        """The run's history as a pyarrow.Table (see `Run.history`)."""
        return self.run.history()

    # -- internals ------------------------------------------------------------------------------
    def _store_config(self, source: str, config: Any, step: int) -> None:
        """Store `config` with the run when it differs from the last stored (see `artstore.log.configs`):
        read once per model object and source, then compared in memory. This process's logs still
        queued for a group commit land first, so `config(as_of=...)` a version holding a log made
        before the change never shows the new config (a change is rare: one wait per change)."""
        text = as_json(config)
        if self._stored_config.get(source) != text:
            group_commit.flush(self.run.location)
            ConfigLog(self.run.location).record(source, text, step, known=self._stored_config.get(source))
            self._stored_config[source] = text

    def _automatic_metrics(self, split: str, step: int, provided: set[str]) -> dict[str, float]:
        """For a backend whose `supports_automatic_train_step_metrics()` is true, ART adds to the
        first train log of each step `time/step_wall_s` (seconds since the previous one, or since
        the model was made) and, when the backend prices its GPU
        (`automatic_gpu_cost_per_hour_usd(model)`), `costs/gpu` in USD."""
        backend = self._backend
        supports = getattr(backend, "supports_automatic_train_step_metrics", None)
        if split != "train" or not callable(supports) or not supports() or self._last_train_step == step:
            return {}
        now = time.monotonic()
        wall_s = max(0.0, now - self._last_train_log)
        self._last_train_log, self._last_train_step = now, step
        out = {} if "time/step_wall_s" in provided else {"time/step_wall_s": wall_s}
        price = getattr(backend, "automatic_gpu_cost_per_hour_usd", None)
        if callable(price) and "costs/gpu" not in provided:
            usd_per_hour = price(self)
            if isinstance(usd_per_hour, (int, float)) and not isinstance(usd_per_hour, bool):
                out["costs/gpu"] = wall_s * float(usd_per_hour) / 3600.0
        return out

    def _log(self, groups: list[TrajectoryGroup] | None, split: str, metrics: Mapping[str, float] | None,
             step: int, log_id: str | None) -> LogRecord | None:
        """One commit (the log's journal row, its builder delta inside) and no read of the run's
        state: the builder's sums are read once per model object (`artstore.log.sums.Tracker`)."""
        if groups is None and metrics is None:
            return None
        check_segment("split", split)
        extra = check_extra(metrics)
        location = self.run.location
        group = group_commit.mode(self.commit) == "group"
        with self._metrics_lock:  # the builder's sums: one log computes at a time in this process
            sums = self._tracker(location)
            if group and sums.follow(group_commit.commits_since(location.child("logs.lance"), sums.version,
                                                                     sums.read_at)):
                self._metrics.load_sums(sums.working())  # another writer's logs landed meanwhile
            if sums.legacy:  # a run from before the journal: its sums live in its state only
                sums.refresh()
                self._metrics.load_sums(sums.working())
            before = self._metrics.sums_snapshot()
            scoped = builder_for_split(self._metrics, split)
            for key, value in self._automatic_metrics(split, step, set(extra)).items():
                scoped.add_metric(key, value)
            values = compute_metrics(groups, split, extra, step=step, builder=self._metrics)
            change = sums_mod.delta(before, self._metrics.sums_snapshot())
            token = sums.begin(change)
        record = None
        try:
            if not values and groups is None:
                return None
            # The content id of a retried call must not depend on running sums or timings, but must
            # tell apart two logs at one step that differ only in costs added to the builder.
            same_call = {**extra, **{k: v for k, v in values.items() if not is_cumulative(k)
                                     and not k.startswith(("time/", "throughput/"))}}
            if self.config is not None:
                self._store_config("model", self.config, step)
            record = write_log(location, groups or [], split=split, step=step, metrics=same_call, values=values,
                               log_id=log_id, allow_nonfinite_rewards=self.allow_nonfinite_rewards,
                               retention=self.retention, reader_window=self.reader_window,
                               state_delta=json.dumps(change, allow_nan=False), commit_mode=self.commit)
        finally:
            with self._metrics_lock:
                done = record is not None
                # a queued log's logs_version is filled in by the committer, maybe already: not read here
                if done and record.created and record.queued and record.state_delta_stored:
                    sums.settle_queued(token, record.log_id, record.write_id)  # queued for a group commit
                elif sums.settle(token, record.log_id if done else None, done and record.created,
                               done and record.state_delta_stored, record.logs_version if done and not record.queued else None):
                    self._metrics.load_sums(sums.working())
        if record.created and not record.queued:  # a group commit notes its rows itself (`group_commit.on_commit`)
            # keep a cached step summary current without reading (see step_summary)
            step_summary.note_log(location, record.logs_version, record.step, record.metrics)
            log_notes.note_log(location, record)  # and the kept logs (see log_notes)
        return record

    def _tracker(self, location: Any) -> sums_mod.Tracker:
        """The running sums of the run at `location`, read on this object's first log there."""
        if self._sums is None or self._sums.run != location:
            self._sums = sums_mod.Tracker(location)
            self._metrics.load_sums(self._sums.working())
        return self._sums

    def _forget_sums(self) -> None:
        """The stored sums were set here: read them again at the next log."""
        with self._metrics_lock:
            self._sums = None

    def _report(self, record: LogRecord | None) -> None:
        if record is None or not record.created or not wants_wandb(self.report_metrics):
            return
        if self._mirror is None:
            self._mirror = WandbMirror(self.project, self._storage_name(), {**self._wandb_dump(), **self._wandb_config})
        self._mirror.log(record.metrics, record.step)

    def _wandb_dump(self) -> dict[str, Any]:
        # storage_options and the inference key are excluded: secrets never reach wandb.
        return self.model_dump(mode="json", exclude={"storage_options", "retention", "reader_window", "inference_api_key",
                                                       "commit"})
