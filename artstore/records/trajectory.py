"""The data model: Trajectory, TrajectoryGroup and their messages (pydantic v2, ART's fields).

Messages follow OpenAI's chat format. A message is kept as a plain dict with every key it was
given (ART's TypedDict validation drops unknown keys and turns lists into one-shot iterators; we
normalise to plain JSON values instead, so nothing is lost and a round trip is exact). Model
output is kept as an `openai` `Choice` object, as in ART.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic
from openai.types.chat import ChatCompletionMessage
from openai.types.chat.chat_completion import Choice

from artstore.errors import ValidationError
from artstore.records.numbers import as_float, as_int64

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_DEPTH = 200  # nesting of JSON values (metadata, tool schemas, message fields)

__all__ = ["Choice", "History", "MessageOrChoice", "PydanticException", "Trajectory", "TrajectoryGroup"]


def field_path(base: str, part: str | int) -> str:
    """`base` extended by a key or an index: ("metadata", "k") -> "metadata.k", ("x", 0) -> "x[0]"."""
    if isinstance(part, int):
        return f"{base}[{part}]"
    if not part:
        return base
    return base + part if part.startswith("[") or not base else f"{base}.{part}"


def plain_json(value: Any, where: str = "", depth: int = 0) -> Any:
    """`value` as plain JSON values (dict with str keys, list, str, int, float, bool, None).

    Tuples and other non-string iterables become lists; anything else, or nesting deeper than
    MAX_DEPTH, raises a ValidationError naming `where` (a path relative to the value checked).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth >= MAX_DEPTH:
        raise ValidationError(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(where, f"keys must be strings, got {type(k).__name__} {k!r}")
            out[k] = plain_json(v, field_path(where, k), depth + 1)
        return out
    if isinstance(value, pydantic.BaseModel):
        return plain_json(value.model_dump(mode="json", exclude_unset=True), where, depth)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        return [plain_json(v, field_path(where, i), depth + 1) for i, v in enumerate(value)]
    raise ValidationError(where, f"{type(value).__name__} is not a JSON value")


def _artstore_error(e: pydantic.ValidationError) -> ValidationError:
    """pydantic's first error as artstore's ValidationError (or the InvalidNameError etc. a
    validator raised), naming the field by its full path."""
    err = e.errors()[0]
    where = ""
    for part in err["loc"]:
        where = field_path(where, part)
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, ValidationError):
        return type(inner)(field_path(where, inner.field), inner.problem)
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return ValidationError(where or e.title, err["msg"] + more)


@contextlib.contextmanager
def artstore_errors() -> Iterator[None]:
    """Raise artstore's ValidationError (naming the field) instead of pydantic's."""
    try:
        yield
    except pydantic.ValidationError as e:
        raise _artstore_error(e) from None


def _message_or_choice(item: Any) -> dict[str, Any] | Choice:
    if isinstance(item, Choice):
        return item
    if isinstance(item, ChatCompletionMessage):  # a response's message, not sampled by us
        item = item.model_dump(mode="json", exclude_unset=True)
    if not isinstance(item, Mapping):
        raise ValidationError("", f"expected a message dict or Choice, got {type(item).__name__}")
    if "role" not in item and "message" in item:
        try:
            return Choice.model_validate(dict(item))
        except pydantic.ValidationError as e:
            raise ValidationError("", f"not a valid Choice: {e}") from None
    role = item.get("role")
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {sorted(ROLES)}, got {role!r}")
    message = plain_json(item)
    for i, call in enumerate(message.get("tool_calls") or []):
        arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        if arguments is not None and not isinstance(arguments, str):
            raise ValidationError(f"tool_calls[{i}].function.arguments",
                                  f"must be a JSON string, as OpenAI gives it (json.dumps it), got {type(arguments).__name__}")
    return message


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    tools = plain_json(value)
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValidationError("", "must be a list of tool schema objects")
    return tools


def _metadata(value: Any) -> dict[str, Any]:
    meta = plain_json(value)
    if not isinstance(meta, dict):
        raise ValidationError("", f"must be an object, got {type(value).__name__}")
    return meta


def _reward(value: Any) -> float:
    return as_float("", value)


def _metric_value(value: Any) -> float | int | bool:
    """A metric is a number or a bool, kept as its kind (so ints and bools read back as such)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return as_int64("", value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValidationError("", f"must be a number or a bool, got {type(value).__name__}")


MessageOrChoice = Annotated[Any, pydantic.PlainValidator(_message_or_choice)]
Tools = Annotated[Any, pydantic.PlainValidator(_tools)]
Metadata = Annotated[Any, pydantic.PlainValidator(_metadata)]
Reward = Annotated[float, pydantic.PlainValidator(_reward)]
MetricValue = Annotated[float | int | bool, pydantic.PlainValidator(_metric_value)]
PolicyVersion = Annotated[int, pydantic.Field(ge=-(2**63), lt=2**63)]  # stored as int64


class _Model(pydantic.BaseModel):
    """Bad input raises artstore's ValidationError naming the field, never pydantic's."""

    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, /, **data: Any) -> None:
        with artstore_errors():
            super().__init__(**data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        with artstore_errors():
            return super().model_validate(obj, **kwargs)


class PydanticException(_Model):
    """An exception raised by a rollout, as ART records it."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> PydanticException:
        return cls(
            type=str(type(exc)),
            message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )


class History(_Model):
    """An additional conversation attached to a trajectory (a judge's, a sub-agent's)."""

    messages_and_choices: list[MessageOrChoice]
    tools: Tools = None


class _StartTime:
    """When a trajectory object was made (for `finish()`). Not data: equal to any other, so a
    trajectory read back from the store equals the one logged."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StartTime)

    __hash__ = None  # type: ignore[assignment]


def message_of(item: dict[str, Any] | Choice) -> dict[str, Any]:
    """A message or Choice as a chat message to send back to a model (ART's `messages()`): a
    Choice becomes its assistant message (content "" when None, tool calls kept); a message's
    None content becomes ""."""
    if isinstance(item, Choice):
        message: dict[str, Any] = {"role": "assistant", "content": item.message.content or ""}
        if item.message.tool_calls:
            message["tool_calls"] = [c.model_dump(mode="json") for c in item.message.tool_calls]
        return message
    message = copy.copy(item)
    if message.get("content") is None:
        message["content"] = ""
    return message


class Trajectory(_Model):
    """One rollout: its conversation, reward and bookkeeping. Fields as in ART."""

    messages_and_choices: list[MessageOrChoice] = pydantic.Field(default_factory=list)
    tools: Tools = None
    additional_histories: list[History] = pydantic.Field(default_factory=list)
    reward: Reward = 0.0
    initial_policy_version: PolicyVersion | None = None
    final_policy_version: PolicyVersion | None = None
    metrics: dict[str, MetricValue] = pydantic.Field(default_factory=dict)
    metadata: Metadata = pydantic.Field(default_factory=dict)
    logs: list[str] = pydantic.Field(default_factory=list)
    _start: _StartTime = pydantic.PrivateAttr(default_factory=_StartTime)

    @property
    def start_time(self) -> datetime:
        """When this object was made (UTC): `finish()` measures from it."""
        return self._start.at

    def log(self, message: str) -> None:
        self.logs.append(message)

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages (Choices as assistant messages), ART's `messages()`."""
        return [message_of(m) for m in self.messages_and_choices]

    def finish(self) -> Trajectory:
        """Set the `duration` metric: seconds since the trajectory was made. Returns self."""
        self.metrics["duration"] = (datetime.now(UTC) - self.start_time).total_seconds()
        return self

    @contextlib.asynccontextmanager
    async def track_duration(self, metric_name: str) -> AsyncIterator[None]:
        """Add the block's seconds to the `{metric_name}_duration` metric (summed over uses)."""
        started = time.monotonic()
        try:
            yield
        finally:
            key = f"{metric_name}_duration"
            self.metrics[key] = self.metrics.get(key, 0.0) + time.monotonic() - started

    def __str__(self) -> str:
        return f"Trajectory(reward={self.reward}, metrics={self.metrics}, metadata={self.metadata})"


_PREPARED = "_artstore_prepared_items"  # items consumed by __new__, handed to __init__


class TrajectoryGroup(_Model):
    """Trajectories of one scenario, compared against each other by GRPO.

    Built, as in ART, from an iterable that may mix trajectories and exceptions; the iterable is
    consumed exactly once. Built from awaitables of trajectories (ART's rollout pattern,
    `TrajectoryGroup(rollout(s) for _ in range(n))`), it is an awaitable of the group instead:
    awaited (usually by `gather_trajectory_groups`), it runs them, keeps the trajectories in the
    order they finish and records the failures as the group's exceptions.
    """

    def __new__(cls, trajectories: Iterable[Any] = (), **kwargs: Any) -> Any:
        items = list(trajectories)
        waits = [i for i in items if isinstance(i, Awaitable) and not isinstance(i, pydantic.BaseModel)]
        if waits:
            if len(waits) != len(items):
                raise ValidationError("trajectories", "cannot mix trajectories and awaitables in one group")
            from artstore.records.gather import awaited_group  # gather builds groups: import on use

            return awaited_group(cls, waits, **kwargs)
        group = super().__new__(cls)
        object.__setattr__(group, _PREPARED, items)
        return group

    trajectories: list[Trajectory]
    exceptions: list[PydanticException] = pydantic.Field(default_factory=list)
    metadata: Metadata = pydantic.Field(default_factory=dict)
    metrics: dict[str, MetricValue] = pydantic.Field(default_factory=dict)
    logs: list[str] = pydantic.Field(default_factory=list)

    def __init__(
        self,
        trajectories: Iterable[Trajectory | BaseException] = (),
        *,
        exceptions: Iterable[PydanticException | BaseException | Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, MetricValue] | None = None,
        logs: Iterable[str] = (),
    ) -> None:
        kept: list[Any] = []
        errors: list[Any] = []
        prepared = self.__dict__.pop(_PREPARED, None)
        for item in trajectories if prepared is None else prepared:  # one pass: generators are consumed once
            (errors if isinstance(item, BaseException) else kept).append(item)
        errors = [*errors, *exceptions]
        super().__init__(
            trajectories=kept,
            exceptions=[PydanticException.from_exception(e) if isinstance(e, BaseException) else e for e in errors],
            metadata={} if metadata is None else metadata,
            metrics={} if metrics is None else metrics,
            logs=list(logs),
        )

    def __len__(self) -> int:
        return len(self.trajectories)

    def __iter__(self) -> Iterator[Trajectory]:  # type: ignore[override]
        """The trajectories (as in ART), not pydantic's (field, value) pairs."""
        return iter(self.trajectories)

    def __copy__(self) -> TrajectoryGroup:
        """A new group with its own lists and dicts (the trajectories themselves are shared)."""
        return type(self).model_construct(
            trajectories=self.trajectories[:], exceptions=self.exceptions[:], metadata=dict(self.metadata),
            metrics=dict(self.metrics), logs=self.logs[:])

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> TrajectoryGroup:
        memo = {} if memo is None else memo
        if id(self) in memo:
            return memo[id(self)]
        copied = type(self).model_construct(**{k: copy.deepcopy(getattr(self, k), memo)
                                               for k in ("trajectories", "exceptions", "metadata", "metrics", "logs")})
        memo[id(self)] = copied
        return copied

    def log(self, message: str) -> None:
        self.logs.append(message)


def check_reward(reward: float, where: str, allow_nonfinite: bool) -> None:
    """Reject NaN/inf rewards (they poison means and advantages) unless explicitly allowed."""
    if not allow_nonfinite and not math.isfinite(reward):
        raise ValidationError(where, f"reward is {reward}; pass allow_nonfinite_rewards=True to store it")
