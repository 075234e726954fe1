"""MetricsBuilder: ART 0.5.23's per-step accumulator of costs, step times and step counts.

Values added during a step (`add_cost`, `add_metric` on `costs/`, `time/step_`, `data/step_` keys)
are summed in a buffer per scope ("train", "eval", ...) and emitted by `flush()` with:
- cost rollups: every parent of a cost key (`costs/train` = sum of `costs/train/*`) and
  `costs/all` (sum over the top-level cost children);
- cumulative variants of every `costs/`, `time/`, `data/` key (`costs/cum/all`,
  `data/cum/num_scenarios`, `time/cum/wall_s`): running sums over the run's life;
- `data/cum/num_unique_scenarios` when groups carried a `scenario_id`.

The running sums live in `state_dict()`; the model persists it in the run's state after each
log (under `_metrics_builder_state`, as ART does), so they continue across model re-creation.
Units: costs in USD, times in seconds, counts as floats.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from artstore.errors import UnsupportedError, ValidationError
from artstore.records.metric_names import CUMULATIVE_SECTIONS, cumulative_name, is_cumulative

_active: ContextVar[MetricsBuilder] = ContextVar("artstore_active_metrics_builder")
_UNUSED_RATIO = "data/step_unused_and_dummy_ratio"  # a ratio: its cumulative form is recomputed, not summed
STATE_KEY = "_metrics_builder_state"  # where a model's state holds the running sums (ART's key)


@dataclass
class _Shared:
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[str, dict[str, float]] = field(default_factory=dict)  # scope -> key -> step sum
    pending_ids: dict[str, set[str]] = field(default_factory=dict)  # scope -> scenario ids this step
    cum: dict[str, float] = field(default_factory=dict)
    unique_ids: set[str] = field(default_factory=set)


class MetricsBuilder:
    """Accumulates one step's costs, times and counts (see the module doc). Builders made with
    `for_cost_context` share the running sums and keep a buffer per scope."""

    def __init__(self, cost_context: str, *, _shared: _Shared | None = None, _buffer_scope: str | None = None):
        if not cost_context:
            raise ValidationError("cost_context", "must be non-empty")
        self.cost_context = cost_context
        self._scope = _buffer_scope if _buffer_scope is not None else cost_context
        self._shared = _shared if _shared is not None else _Shared()

    # -- adding values -----------------------------------------------------------------------
    def add_cost(self, path: str, usd: float) -> None:
        """Add `usd` to `costs/{path}` (e.g. `add_cost("train/judge", 0.01)`)."""
        if not path:
            raise ValidationError("path", "cost path must be non-empty")
        self.add_metric(f"costs/{path}", float(usd))

    def add_metric(self, key: str, value: float) -> None:
        """Add `value` to this step's `key` (a `section/...` name; not a `*/cum/*` one)."""
        if "/" not in key:
            raise ValidationError(key, "metric key must include a section prefix (e.g. 'time/step_eval_s')")
        if is_cumulative(key):
            raise ValidationError(key, "uses the reserved cumulative namespace '<section>/cum/'")
        with self._shared.lock:
            buffer = self._shared.pending.setdefault(self._scope, {})
            for existing in buffer:
                if existing != key and (existing.startswith(f"{key}/") or key.startswith(f"{existing}/")):
                    raise ValidationError(key, f"cannot be a leaf beside {existing!r} (one is the other's parent)")
            buffer[key] = buffer.get(key, 0.0) + float(value)

    def add_data(self, step_num_scenarios: int | None = None, step_rollout_tokens: int | None = None,
                 scenario_ids: list[str] | None = None) -> None:
        if step_num_scenarios is not None:
            self.add_metric("data/step_num_scenarios", float(step_num_scenarios))
        if step_rollout_tokens is not None:
            self.add_metric("data/step_rollout_tokens", float(step_rollout_tokens))
        if scenario_ids is not None:
            with self._shared.lock:
                self._shared.pending_ids.setdefault(self._scope, set()).update(str(s) for s in scenario_ids)

    def add_user_timing(self, step_wall_s: float | None = None, step_rollout_s: float | None = None,
                        step_eval_s: float | None = None) -> None:
        for key, value in (("time/step_wall_s", step_wall_s), ("time/step_rollout_s", step_rollout_s),
                           ("time/step_eval_s", step_eval_s)):
            if value is not None:
                self.add_metric(key, float(value))

    def add_idle_times(self, step_trainer_idle_s: float | None = None, step_rollout_idle_s: float | None = None) -> None:
        for key, value in (("time/step_trainer_idle_s", step_trainer_idle_s),
                           ("time/step_rollout_idle_s", step_rollout_idle_s)):
            if value is not None:
                self.add_metric(key, float(value))

    def add_response_cost(self, source: str, response: Any, **_: Any) -> float | None:
        raise UnsupportedError(
            "add_response_cost needs ART's provider price tables, which artstore does not carry: compute the "
            f"cost yourself and call add_cost('{self.cost_context}/{source}', usd)")

    def register_cost_extractor(self, provider: str, extractor: Any) -> None:
        raise UnsupportedError("provider cost extractors price responses for add_response_cost, which artstore "
                               "does not do: compute costs yourself and call add_cost(path, usd)")

    def register_model_pricing(self, model_name: str, **_: Any) -> None:
        raise UnsupportedError("model pricing feeds add_response_cost, which artstore does not do: compute costs "
                               "yourself and call add_cost(path, usd), or TrainableModel.set_cost_calculator(...)")

    @contextlib.contextmanager
    def measure(self, key: str) -> Iterator[None]:
        """Add the seconds the block takes to `key` (e.g. `time/step_eval_s`)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add_metric(key, time.monotonic() - started)

    # -- emitting a step ---------------------------------------------------------------------
    async def flush(self) -> dict[str, float]:
        """This scope's step values with rollups and running sums; clears the scope's buffer."""
        return self.flush_now()

    def flush_now(self) -> dict[str, float]:
        """`flush()` for code without an event loop."""
        shared = self._shared
        with shared.lock:
            result = dict(shared.pending.pop(self._scope, {}))
            ids = shared.pending_ids.pop(self._scope, set())
            result.update(_rollups({k: v for k, v in result.items() if k.startswith("costs/")}))
            for key, value in list(result.items()):
                if key.split("/", 1)[0] not in CUMULATIVE_SECTIONS or key == _UNUSED_RATIO:
                    continue
                cum_key = cumulative_name(key)
                shared.cum[cum_key] = shared.cum.get(cum_key, 0.0) + value
                result[cum_key] = shared.cum[cum_key]
            if _UNUSED_RATIO in result:
                nominal = shared.cum.get("data/cum/nominal_schedule_capacity_tokens", 0.0)
                unused = sum(shared.cum.get(k, 0.0) for k in ("data/cum/unused_packed_capacity_tokens",
                                                              "data/cum/dummy_schedule_capacity_tokens"))
                shared.cum[cumulative_name(_UNUSED_RATIO)] = result[cumulative_name(_UNUSED_RATIO)] = (
                    unused / nominal if nominal else 0.0)
            if ids:
                shared.unique_ids.update(ids)
                result["data/cum/num_unique_scenarios"] = float(len(shared.unique_ids))
            _throughput(result, shared.cum)
            return result

    async def drain_pending(self) -> dict[str, float]:
        """This scope's raw step values, without rollups or running sums; clears the buffer."""
        with self._shared.lock:
            self._shared.pending_ids.pop(self._scope, None)
            return dict(self._shared.pending.pop(self._scope, {}))

    # -- context and scopes ------------------------------------------------------------------
    def activate(self) -> Token[MetricsBuilder]:
        return _active.set(self)

    @contextlib.contextmanager
    def activate_context(self) -> Iterator[MetricsBuilder]:
        token = self.activate()
        try:
            yield self
        finally:
            _active.reset(token)

    @staticmethod
    def get_active() -> MetricsBuilder:
        """The builder activated in this context; LookupError when none is."""
        return _active.get()

    def for_cost_context(self, cost_context: str, *, buffer_scope: str | None = None) -> MetricsBuilder:
        context = cost_context.strip()
        scope = buffer_scope.strip() if buffer_scope is not None else context
        if not context or not scope:
            raise ValidationError("cost_context", "cost context and buffer scope must be non-empty")
        if context == self.cost_context and scope == self._scope:
            return self
        return MetricsBuilder(context, _shared=self._shared, _buffer_scope=scope)

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        with self._shared.lock:
            return {"cum_state": dict(self._shared.cum), "unique_scenario_ids": sorted(self._shared.unique_ids)}

    def sums_snapshot(self) -> dict[str, Any]:
        """`state_dict()` with the scenario ids as a set, unsorted: what a caller diffing two
        snapshots needs (a sort of every id so far, twice a log, grew with the run)."""
        with self._shared.lock:
            return {"cum_state": dict(self._shared.cum), "unique_scenario_ids": set(self._shared.unique_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the running sums with `state`'s and drop any pending step values."""
        self.load_sums(state)
        with self._shared.lock:
            self._shared.pending.clear()
            self._shared.pending_ids.clear()

    def load_sums(self, state: dict[str, Any]) -> None:
        """Replace the running sums with `state`'s; values added this step stay pending."""
        with self._shared.lock:
            self._shared.cum = {str(k): float(v) for k, v in (state.get("cum_state") or {}).items()}
            self._shared.unique_ids = {str(v) for v in state.get("unique_scenario_ids") or []}


def _rollups(costs: dict[str, float]) -> dict[str, float]:
    """Each parent of a cost key as the sum of its leaves, and `costs/all`."""
    if not costs:
        return {}
    parents = {"/".join(k.split("/")[:depth]) for k in costs for depth in range(2, len(k.split("/")))}
    out = {p: sum(v for k, v in costs.items() if k.startswith(f"{p}/")) for p in parents}
    top = {k.split("/")[1] for k in costs}
    out["costs/all"] = sum(out.get(f"costs/{c}", costs.get(f"costs/{c}", 0.0)) for c in top)
    return out


def _throughput(result: dict[str, float], cum: dict[str, float]) -> None:
    """Average tokens per second over the run, when its token and time sums exist."""
    for triggers, tokens, seconds, out in (
        (("data/step_trainable_assistant_tokens", "time/step_backend_train_s"), "data/cum/trainable_assistant_tokens",
         "time/cum/backend_train_s", "throughput/avg_trainer_tok_per_s"),
        (("data/step_rollout_tokens", "time/step_rollout_s"), "data/cum/rollout_tokens", "time/cum/rollout_s",
         "throughput/avg_rollout_tok_per_s"),
    ):
        if any(t in result for t in triggers) and tokens in cum and cum.get(seconds, 0.0) > 0:
            result[out] = cum[tokens] / cum[seconds]
