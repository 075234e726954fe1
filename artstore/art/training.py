"""What a training backend is (ART 0.5.23's interface) and how training is configured.

artstore defines the interface and never imports a backend: the trainer package implements it,
and a model is given one with `await model.register(backend)`.

How a backend tells the model where to run inference (ART 0.5.23's protocol):

1. `TrainableModel.register(backend)` awaits `backend.register(model)`, then, when the backend
   has it, `backend._prepare_backend_for_training(model, openai_client_config)`, which starts (or
   finds) an OpenAI-compatible server for the model and returns `(base_url, api_key)`:
   `base_url` ends in `/v1` (e.g. "http://127.0.0.1:8000/v1"), `api_key` is the key that server
   accepts (any string when it checks none). The model stores them as `inference_base_url` and
   `inference_api_key`; `model.openai_client()` and `model.litellm_completion_params()` use them.
2. `backend._model_inference_name(model, step=None)`, when the backend has it, is the model name
   to send to that server: the latest checkpoint for `step=None`, else that step's checkpoint
   (ART's vLLM convention is `"{name}@{step}"`). Without it the model uses
   `inference_model_name or name`, with `@{step}` appended for a step.

A backend without `_prepare_backend_for_training` serves no inference: the inference fields stay
unset and `model.openai_client()` raises `InferenceUnavailableError` saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import pydantic

if TYPE_CHECKING:
    from artstore.art.model import Model
    from artstore.art.trainable import TrainableModel
    from artstore.records.trajectory import TrajectoryGroup


class TrainConfig(pydantic.BaseModel):
    """Per-call training settings, ART 0.5.23's fields. `beta` is artstore's older name of
    `kl_penalty_coef` (the KL coefficient against the base model; 0 = off): setting either sets
    both."""

    model_config = pydantic.ConfigDict(extra="forbid")

    learning_rate: float = pydantic.Field(5e-6, gt=0, description="AdamW learning rate.")
    kl_penalty_coef: float = pydantic.Field(0.0, ge=0, description="KL coefficient against the base model.")
    kl_penalty_source: Literal["current_learner", "sample"] = "current_learner"
    grad_accumulation_sequences: int | None = pydantic.Field(default=None, ge=1)
    optimizer_save_interval: int = pydantic.Field(default=5, ge=1)
    final_training_step: int | None = pydantic.Field(default=None, ge=1)
    beta: float = pydantic.Field(0.0, ge=0, description="Same as kl_penalty_coef.")

    @pydantic.model_validator(mode="after")
    def _same_kl(self) -> TrainConfig:
        if self.beta and self.kl_penalty_coef and self.beta != self.kl_penalty_coef:
            raise ValueError("beta and kl_penalty_coef are the same setting: give one")
        kl = self.beta or self.kl_penalty_coef
        object.__setattr__(self, "beta", kl)
        object.__setattr__(self, "kl_penalty_coef", kl)
        return self


@runtime_checkable
class Backend(Protocol):
    """ART's backend interface: register a model, report its step, train, delete checkpoint
    files. Optional (looked up with getattr, see the module doc): `_prepare_backend_for_training`,
    `_model_inference_name`, `train(model, groups, **settings) -> TrainResult`, `_train_sft`,
    `close`."""

    async def register(self, model: Model) -> None: ...

    async def _get_step(self, model: TrainableModel) -> int: ...

    def _train_model(
        self, model: TrainableModel, trajectory_groups: Sequence[TrajectoryGroup], config: TrainConfig,
        dev_config: dict[str, Any], verbose: bool = False,
    ) -> AsyncIterator[dict[str, float]]:
        """Train one step; yield metric dicts (names with '/' are kept, bare names get 'train/')."""
        ...

    async def _delete_checkpoint_files(self, model: TrainableModel, steps_to_keep: list[int]) -> None: ...
