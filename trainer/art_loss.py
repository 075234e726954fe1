"""ART 0.5.23's RL objective (`art/loss.py`), for `backend.train`: CISPO (its default) or PPO.

Per trainable token, with ratio = exp(new - old) (old: the sampler's logprob; unknown -> ratio 1),
lower = 1 - epsilon, upper = 1 + epsilon_high:

    cispo:  -clip(ratio, lower, upper).detach() * A * new      (epsilon 1.0, epsilon_high 4.0)
    ppo:    -min(ratio * A, clip(ratio, lower, upper) * A)     (epsilon 0.2, epsilon_high = epsilon)

and the loss is the mean over trainable tokens. Options, as ART applies them, in this order:
`max_negative_advantage_importance_sampling_weight` caps every ratio; `mask_prob_ratio` zeroes
ratios outside (lower, upper); `kimi_k2_tau` subtracts tau * (new - old) from the advantage;
`kl_penalty_coef` > 0 shifts each token's advantage by coef * (mean KL - token KL), where token
KL = source - reference logprob (source: the learner's logprob, or the sampler's with
`kl_penalty_source="sample"`; reference: the base model, the adapter disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LOG_RATIO_BOUND = 20.0  # ART's bound for float32 logprobs (exp(20) is finite)


@dataclass(frozen=True)
class ArtObjective:
    """The loss callable `trainer.loop.train_step(objective=...)` applies to each micro-batch."""

    ppo: bool = False
    epsilon: float | None = None
    epsilon_high: float | None = None
    kl_penalty_coef: float = 0.0
    kl_penalty_source: Literal["current_learner", "sample"] = "current_learner"
    max_negative_advantage_importance_sampling_weight: float | None = None
    mask_prob_ratio: bool = False
    kimi_k2_tau: float | None = None

    @property
    def uses_reference(self) -> bool:
        """Whether the base model's logprobs are needed (the KL penalty)."""
        return self.kl_penalty_coef > 0

    def bounds(self) -> tuple[float, float]:
        """(lower, upper) clip bounds of the ratio, with ART's defaults per loss."""
        epsilon = self.epsilon if self.epsilon is not None else (0.2 if self.ppo else 1.0)
        high = self.epsilon_high if self.epsilon_high is not None else (None if self.ppo else 4.0)
        return 1.0 - epsilon, 1.0 + (epsilon if high is None else high)

    def __call__(self, new: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(mean loss over `mask`, stats) for [B, T] logprobs, advantages and mask."""
        mask = mask.bool()
        zero = torch.zeros_like(new)
        old = torch.where(torch.isfinite(old) & mask, old, new.detach())
        diff = torch.where(mask, new - old, zero)
        ratio = torch.exp(diff.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))
        lower, upper = self.bounds()
        if self.max_negative_advantage_importance_sampling_weight:
            ratio = ratio.clamp(max=self.max_negative_advantage_importance_sampling_weight)
        if self.mask_prob_ratio:
            ratio = torch.where((ratio > lower) & (ratio < upper), ratio, zero)
        if self.kimi_k2_tau:
            advantages = advantages - self.kimi_k2_tau * diff.detach()
        n = mask.sum().clamp(min=1)
        kl = torch.zeros((), device=new.device)
        if self.uses_reference:
            if ref is None:
                raise ValueError("kl_penalty_coef > 0 needs the reference logprobs")
            source = (old if self.kl_penalty_source == "sample" else new).detach()
            per_token = torch.where(mask, source - ref, zero)
            kl = per_token.sum() / n
            advantages = advantages + self.kl_penalty_coef * torch.where(mask, kl - per_token, zero)
        clipped = ratio.clamp(lower, upper)
        if self.ppo:
            per_token_loss = -torch.minimum(ratio * advantages, clipped * advantages)
        else:
            per_token_loss = -(clipped.detach() * advantages * new)
        loss = torch.where(mask, per_token_loss, zero).sum() / n
        with torch.no_grad():
            outside = (ratio < lower) | (ratio > upper)
            stats = {
                "policy_loss": float(loss.detach()),
                "kl": float(kl),
                "clip_fraction": float(torch.where(mask, outside.float(), zero).sum() / n),
                "ratio_mean": float(torch.where(mask, ratio, zero).sum() / n),
                "num_tokens": float(mask.sum()),
            }
        return loss, stats
