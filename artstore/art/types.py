"""ART 0.5.23's public value types: messages, tools, LoRA settings and training results.

The message types are OpenAI's chat types (`Choice` is the model's sampled output), spelled as ART
spells them, so type hints in ART code keep working after `import artstore as art`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pydantic
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_message_param import ChatCompletionMessageParam
from openai.types.chat.chat_completion_tool_param import ChatCompletionToolParam
from typing_extensions import TypedDict

__all__ = ["Choice", "LoRAConfig", "LocalTrainResult", "Message", "MessageOrChoice", "Messages",
           "MessagesAndChoices", "Tools", "TrainResult", "TrainSFTConfig"]

Message = Annotated[ChatCompletionMessageParam, pydantic.SkipValidation]
MessageOrChoice = Message | Choice
Messages = list[Message]
MessagesAndChoices = list[MessageOrChoice]
Tools = list[ChatCompletionToolParam]


class LoRAConfig(TypedDict, total=False):
    """The adapter's settings, as ART's `art.dev.LoRAConfig` names them (`rank`, `alpha`,
    `dropout`, `target_modules`, ...). artstore stores it with the model; the backend reads it."""

    rank: int
    target_modules: list[str]
    alpha: int
    dropout: float
    bias: str
    layers_to_transform: list[int] | None
    layers_pattern: str | None
    use_gradient_checkpointing: str
    random_state: int
    max_seq_length: int
    use_rslora: bool
    modules_to_save: list[str] | None
    init_weights: bool
    loftq_config: dict
    temporary_location: str


class TrainSFTConfig(pydantic.BaseModel):
    """Supervised fine-tuning settings (ART's): learning rate per call or per batch."""

    learning_rate: float | list[float] = 5e-5
    batch_size: int | Literal["auto"] = "auto"
    assistant_turns: Literal["all", "last"] = "all"


@dataclass
class TrainResult:
    """What `backend.train(model, groups, ...)` returns: the step after training, and the
    step's training metrics (loss, grad norm, ...), to pass on with
    `await model.log(groups, metrics=result.metrics, step=result.step, split="train")`."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalTrainResult(TrainResult):
    """A local backend's result: where the new checkpoint's files are (None: none saved), and,
    when they are still being written, an awaitable that completes when they are ready."""

    checkpoint_path: str | None = None
    checkpoint_ready: Awaitable[None] | None = field(default=None, repr=False, compare=False)
