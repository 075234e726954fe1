"""The data model: Trajectory, TrajectoryGroup and their messages (pydantic v2, ART's fields).

Messages follow OpenAI's chat format. A message is kept as a plain dict with every key it was
given (ART's TypedDict validation drops unknown keys and turns lists into one-shot iterators; we
normalise to plain JSON values instead, so nothing is lost and a round trip is exact). Model
output is kept as an `openai` `Choice` object, as in ART.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import pydantic
from openai.types.chat import ChatCompletionMessage
from openai.types.chat.chat_completion import Choice

from artstore.errors import ValidationError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

__all__ = ["Choice", "History", "MessageOrChoice", "PydanticException", "Trajectory", "TrajectoryGroup"]


def plain_json(value: Any, where: str) -> Any:
    """`value` as plain JSON values (dict with str keys, list, str, int, float, bool, None).

    Tuples and other non-string iterables become lists; anything else raises a ValidationError
    naming `where`.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(where, f"keys must be strings, got {type(k).__name__} {k!r}")
            out[k] = plain_json(v, f"{where}.{k}")
        return out
    if isinstance(value, pydantic.BaseModel):
        return plain_json(value.model_dump(mode="json", exclude_unset=True), where)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        return [plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValidationError(where, f"{type(value).__name__} is not a JSON value")


def _message_or_choice(item: Any) -> dict[str, Any] | Choice:
    if isinstance(item, Choice):
        return item
    if isinstance(item, ChatCompletionMessage):  # a response's message, not sampled by us
        item = item.model_dump(mode="json", exclude_unset=True)
    if not isinstance(item, Mapping):
        raise ValidationError("messages_and_choices", f"expected a message dict or Choice, got {type(item).__name__}")
    if "role" not in item and "message" in item:
        try:
            return Choice.model_validate(dict(item))
        except pydantic.ValidationError as e:
            raise ValidationError("messages_and_choices", f"not a valid Choice: {e}") from None
    role = item.get("role")
    if role not in ROLES:
        raise ValidationError("messages_and_choices.role", f"must be one of {sorted(ROLES)}, got {role!r}")
    return plain_json(item, f"messages_and_choices[{role}]")


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    tools = plain_json(value, "tools")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValidationError("tools", "must be a list of tool schema objects")
    return tools


def _metadata(value: Any) -> dict[str, Any]:
    meta = plain_json(value, "metadata")
    if not isinstance(meta, dict):
        raise ValidationError("metadata", f"must be an object, got {type(value).__name__}")
    return meta


MessageOrChoice = Annotated[Any, pydantic.PlainValidator(_message_or_choice)]
Tools = Annotated[Any, pydantic.PlainValidator(_tools)]
Metadata = Annotated[Any, pydantic.PlainValidator(_metadata)]
MetricValue = float | int | bool


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)


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


class Trajectory(_Model):
    """One rollout: its conversation, reward and bookkeeping. Fields as in ART."""

    messages_and_choices: list[MessageOrChoice] = pydantic.Field(default_factory=list)
    tools: Tools = None
    additional_histories: list[History] = pydantic.Field(default_factory=list)
    reward: float = 0.0
    initial_policy_version: int | None = None
    final_policy_version: int | None = None
    metrics: dict[str, MetricValue] = pydantic.Field(default_factory=dict)
    metadata: Metadata = pydantic.Field(default_factory=dict)
    logs: list[str] = pydantic.Field(default_factory=list)

    def log(self, message: str) -> None:
        self.logs.append(message)


class TrajectoryGroup(_Model):
    """Trajectories of one scenario, compared against each other by GRPO.

    Built, as in ART, from an iterable that may mix trajectories and exceptions; the iterable is
    consumed exactly once.
    """

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
        for item in trajectories:  # one pass: generators are consumed once
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


def check_reward(reward: float, where: str, allow_nonfinite: bool) -> None:
    """Reject NaN/inf rewards (they poison means and advantages) unless explicitly allowed."""
    if not allow_nonfinite and not math.isfinite(reward):
        raise ValidationError(where, f"reward is {reward}; pass allow_nonfinite_rewards=True to store it")
