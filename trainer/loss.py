"""GRPO: group-relative advantages, token log-probabilities and the clipped policy loss.

Pure tensor functions; nothing here knows about models, packing or the store. Log-probabilities
are natural logs (nats). Token tensors are [B, T] and aligned with `input_ids`: position t holds
the value for token t (predicted from the logits at t - 1).
"""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-trajectory advantage [N]: reward minus its group's mean reward.

    `rewards` [N] float, `group_ids` [N] int (any values; equal ids form a group). With
    `scale_by_std` the result is divided by (the group's population std + eps). A group whose
    rewards are all equal (a single trajectory included) gets exactly 0: it carries no signal.
    """
    rewards = rewards.to(torch.float64)  # exact zeros for constant groups, then back to float32
    _, group = torch.unique(group_ids, return_inverse=True)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    count = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(
        0, group, torch.ones_like(rewards)
    )
    mean = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, group, rewards) / count
    centred = rewards - mean[group]
    var = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, group, centred**2) / count
    if scale_by_std:
        centred = centred / (var.sqrt()[group] + eps)
    lo = torch.full((n_groups,), float("inf"), dtype=rewards.dtype).scatter_reduce(
        0, group, rewards, "amin"
    )
    hi = torch.full((n_groups,), float("-inf"), dtype=rewards.dtype).scatter_reduce(
        0, group, rewards, "amax"
    )
    constant = (lo == hi)[group]
    return torch.where(constant, torch.zeros_like(centred), centred).to(torch.float32)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t] | tokens before t) as [B, T] float32; position 0 is 0.

    `logits` [B, T, V] from a causal LM on `input_ids` [B, T]. Computed in float32 as
    gather - logsumexp, which avoids a second [B, T, V] tensor of log-softmax values.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    picked = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return torch.nn.functional.pad(picked, (1, 0), value=0.0)


def grpo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float = 0.2,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped-ratio loss with an optional k3 KL penalty, averaged over masked tokens.

    All inputs are [B, T] (or any same shape). Per token, with ratio = exp(new - old):
        policy = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))
        k3     = exp(ref - new) - (ref - new) - 1            (an unbiased KL(new || ref) estimate)
        loss   = mean over mask of (policy + kl_coef * k3)
    Where `old_logprobs` is NaN (unknown) the detached new logprob stands in: ratio 1. Values
    outside the mask never reach the loss, not even as NaN. Returns (scalar loss, stats) with
    stats `policy_loss`, `kl` (0 without a reference), `clip_fraction`, `ratio_mean`, `num_tokens`.
    """
    if kl_coef and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    mask = mask.bool()
    old = torch.where(torch.isnan(old_logprobs), new_logprobs.detach(), old_logprobs)
    # Masked-out positions may hold anything (NaN, huge gaps): zero the log ratio there.
    log_ratio = torch.where(mask, new_logprobs - old, torch.zeros_like(new_logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_epsilon, 1.0 + clip_epsilon)
    per_token = torch.maximum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None:
        log_ref_ratio = torch.where(mask, ref_logprobs - new_logprobs, torch.zeros_like(kl))
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1.0
    per_token = per_token + kl_coef * kl

    n = mask.sum().clamp(min=1)

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, torch.zeros_like(x)).sum() / n

    loss = masked_mean(per_token)
    with torch.no_grad():
        stats = {
            "policy_loss": float(masked_mean(torch.maximum(unclipped, clipped))),
            "kl": float(masked_mean(kl)),
            "clip_fraction": float(masked_mean((clipped > unclipped).float())),
            "ratio_mean": float(masked_mean(ratio)),
            "num_tokens": float(mask.sum()),
        }
    return loss, stats
