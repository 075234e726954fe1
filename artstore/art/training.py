"""What a training backend is (ART's interface) and how training is configured.

artstore defines the interface and never imports a backend: the trainer package implements it,
and a model is given one with `await model.register(backend)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pydantic

if TYPE_CHECKING:
    from artstore.art.model import TrainableModel
    from artstore.records.trajectory import TrajectoryGroup


class TrainConfig(pydantic.BaseModel):
    """Per-call training settings, as in ART (learning rate per step, KL coefficient `beta`)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    learning_rate: float = pydantic.Field(5e-6, gt=0, description="AdamW learning rate.")
    beta: float = pydantic.Field(0.0, ge=0, description="KL coefficient against the base model (0 = off).")


@runtime_checkable
class Backend(Protocol):
    """ART's backend interface: register a model, report its step, train, delete checkpoint files."""

    async def register(self, model: TrainableModel) -> None: ...

    async def _get_step(self, model: TrainableModel) -> int: ...

    def _train_model(
        self, model: TrainableModel, trajectory_groups: Sequence[TrajectoryGroup], config: TrainConfig,
        dev_config: dict[str, Any], verbose: bool = False,
    ) -> AsyncIterator[dict[str, float]]:
        """Train one step; yield metric dicts (names with '/' are kept, bare names get 'train/')."""
        ...

    async def _delete_checkpoint_files(self, model: TrainableModel, steps_to_keep: list[int]) -> None: ...
