"""The arguments of ART 0.5.23's `LocalBackend.train`, checked: what this trainer does with each.

Honoured (see `LocalBackend.train`): learning_rate; loss_fn ("cispo", "ppo"); normalize_advantages
(False also turns scale_rewards off, as in ART); kl_penalty_coef and kl_penalty_source (the base
model, the adapter disabled, is the reference); epsilon, epsilon_high; scale_rewards;
importance_sampling_level="token"; max_negative_advantage_importance_sampling_weight;
mask_prob_ratio; kimi_k2_tau; allow_training_without_logprobs; logprob_calculation_chunk_size (a
memory knob in ART: logprobs here are computed per micro-batch, which the result does not depend
on, so any positive value is accepted); packed_sequence_length (tokens per packed row);
save_checkpoint (as in ART: the checkpoint is always written, since the step is the latest
checkpoint; False only leaves `checkpoint_path` None); optimizer_save_interval (the AdamW state is
stored with every checkpoint whose step is a multiple of it); verbose.

Not implemented, so a non-default value raises `UnsupportedTrainArgumentError` naming it (never a
silent no-op): loss_fn_config and adam_params (ART's LocalBackend refuses them too),
kl_penalty_reference_step, kl_ref_adapter_path, advantage_balance, importance_sampling_level other
than "token", precalculate_logprobs, plot_tensors, truncated_importance_sampling,
scale_learning_rate_by_reward_std_dev, num_trajectories_learning_rate_multiplier_power,
final_training_step, grad_accumulation_sequences.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import artstore as art
from trainer.art_loss import ArtObjective

# Argument -> its default in ART 0.5.23; any other value is refused.
UNSUPPORTED: dict[str, Any] = {
    "loss_fn_config": None,
    "adam_params": None,
    "kl_penalty_reference_step": None,
    "kl_ref_adapter_path": None,
    "advantage_balance": 0.0,
    "importance_sampling_level": "token",
    "precalculate_logprobs": False,
    "plot_tensors": False,
    "truncated_importance_sampling": None,
    "scale_learning_rate_by_reward_std_dev": False,
    "num_trajectories_learning_rate_multiplier_power": 0.0,
    "final_training_step": None,
    "grad_accumulation_sequences": None,
}


class UnsupportedTrainArgumentError(art.BackendError, ValueError):
    """`backend.train` was given a value for an argument this trainer does not implement."""


@dataclass
class LocalTrainResult:
    """ART 0.5.23's `art.types.LocalTrainResult` (used until artstore exports its own)."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_path: str | None = None
    checkpoint_ready: Awaitable[None] | None = field(default=None, repr=False, compare=False)


def train_result(step: int, metrics: dict[str, float], checkpoint_path: str | None) -> Any:
    """artstore's `LocalTrainResult` when it has one, else this module's (same fields)."""
    cls = getattr(art, "LocalTrainResult", LocalTrainResult)
    return cls(step=step, metrics=metrics, checkpoint_path=checkpoint_path)


@dataclass(frozen=True)
class TrainOptions:
    """What one `backend.train` call does, from its checked arguments."""

    learning_rate: float
    objective: ArtObjective
    scale_rewards: bool
    allow_training_without_logprobs: bool
    packed_sequence_length: int | None
    save_checkpoint: bool
    optimizer_save_interval: int
    verbose: bool


def check(arguments: dict[str, Any]) -> TrainOptions:
    """Options from `backend.train`'s keyword arguments; raises naming the first bad one."""
    for name, default in UNSUPPORTED.items():
        if arguments[name] != default:
            raise UnsupportedTrainArgumentError(
                f"backend.train({name}={arguments[name]!r}): not implemented by trainer.LocalBackend; "
                f"leave it at its default ({default!r})")
    a = arguments
    if a["loss_fn"] not in ("cispo", "ppo"):
        raise UnsupportedTrainArgumentError(f"backend.train(loss_fn={a['loss_fn']!r}): use 'cispo' or 'ppo'")
    if a["kl_penalty_source"] not in ("current_learner", "sample"):
        raise UnsupportedTrainArgumentError(
            f"backend.train(kl_penalty_source={a['kl_penalty_source']!r}): use 'current_learner' or 'sample'")
    positive = {"learning_rate": a["learning_rate"], "optimizer_save_interval": a["optimizer_save_interval"],
                "logprob_calculation_chunk_size": a["logprob_calculation_chunk_size"],
                "packed_sequence_length": a["packed_sequence_length"] or 1}
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UnsupportedTrainArgumentError(f"backend.train({name}={value!r}): must be a positive number")
    if a["kl_penalty_coef"] < 0:
        raise UnsupportedTrainArgumentError(f"backend.train(kl_penalty_coef={a['kl_penalty_coef']!r}): must be >= 0")
    objective = ArtObjective(
        ppo=a["loss_fn"] == "ppo", epsilon=a["epsilon"], epsilon_high=a["epsilon_high"],
        kl_penalty_coef=a["kl_penalty_coef"], kl_penalty_source=a["kl_penalty_source"],
        max_negative_advantage_importance_sampling_weight=a["max_negative_advantage_importance_sampling_weight"],
        mask_prob_ratio=a["mask_prob_ratio"], kimi_k2_tau=a["kimi_k2_tau"],
    )  # fmt: skip
    return TrainOptions(
        learning_rate=a["learning_rate"], objective=objective,
        scale_rewards=a["scale_rewards"] and a["normalize_advantages"],
        allow_training_without_logprobs=a["allow_training_without_logprobs"],
        packed_sequence_length=a["packed_sequence_length"], save_checkpoint=a["save_checkpoint"],
        optimizer_save_interval=int(a["optimizer_save_interval"]), verbose=a["verbose"],
    )  # fmt: skip
