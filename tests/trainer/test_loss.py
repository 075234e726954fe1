"""GRPO pieces against numbers worked out by hand."""

import math

import pytest
import torch

from trainer.loss import group_advantages, grpo_loss, token_logprobs

ln = math.log


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([7, 7, 3, 3, 9, 4, 4, 4, 4])
    # group 7: mean 0.5, std 0.5; group 3: constant; group 9: one trajectory;
    # group 4: mean 0.75, centred (-0.75, 0.25 x3), population std sqrt(0.1875) = 0.4330127
    centred = [0.5, -0.5, 0, 0, 0, -0.75, 0.25, 0.25, 0.25]
    torch.testing.assert_close(
        group_advantages(rewards, groups, scale_by_std=False), torch.tensor(centred)
    )
    s = 0.4330127 + 1e-6
    scaled = [0.5 / 0.500001, -0.5 / 0.500001, 0, 0, 0, -0.75 / s, 0.25 / s, 0.25 / s, 0.25 / s]
    torch.testing.assert_close(
        group_advantages(rewards, groups, scale_by_std=True), torch.tensor(scaled)
    )


def test_constant_groups_are_exactly_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7])
    out = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]), scale_by_std=True)
    assert torch.equal(out, torch.zeros(5))


def test_token_logprobs_by_hand():
    logits = torch.zeros(1, 3, 3)
    logits[0, 1] = torch.tensor([ln(1), ln(2), ln(7)])  # softmax: 0.1, 0.2, 0.7
    logits[0, 2] = 100.0  # the last position predicts nothing in the sequence
    input_ids = torch.tensor([[0, 1, 2]])
    expected = torch.tensor([[0.0, ln(1 / 3), ln(0.7)]])
    torch.testing.assert_close(token_logprobs(logits, input_ids), expected)


def case():
    new = torch.tensor([[ln(0.5), ln(0.6), ln(0.3), ln(0.2), ln(0.9)]], requires_grad=True)
    old = torch.tensor([[ln(0.5), ln(0.4), ln(0.5), math.nan, math.nan]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 2.0, math.nan]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    ref = torch.tensor([[ln(0.5), ln(0.3), ln(0.3), ln(0.4), math.nan]])
    return new, old, adv, mask, ref


def test_grpo_loss_by_hand():
    new, old, adv, mask, _ = case()
    loss, stats = grpo_loss(new, old, adv, mask, clip_epsilon=0.2)
    # t0: ratio 1, A 1 -> -1. t1: ratio 1.5 clipped to 1.2 -> -1.2. t2: ratio 0.6, A -1:
    # max(0.6, 0.8) = 0.8. t3: old unknown -> ratio 1, A 2 -> -2. t4 masked (NaNs ignored).
    assert loss.item() == pytest.approx((-1 - 1.2 + 0.8 - 2) / 4)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx((1 + 1.5 + 0.6 + 1) / 4)
    assert stats["num_tokens"] == 4 and stats["kl"] == 0
    loss.backward()
    # d/dnew of -A * ratio is -A * ratio where unclipped; clipped tokens give 0.
    torch.testing.assert_close(new.grad, torch.tensor([[-0.25, 0.0, 0.0, -0.5, 0.0]]))


def test_grpo_loss_with_k3_kl_by_hand():
    new, old, adv, mask, ref = case()
    loss, stats = grpo_loss(new, old, adv, mask, clip_epsilon=0.2, kl_coef=0.1, ref_logprobs=ref)
    # k3 = r - ln r - 1 with r = p_ref / p_new: t1 r = 0.5 -> 0.1931472; t3 r = 2 -> 0.3068528.
    assert stats["kl"] == pytest.approx((0.1931472 + 0.3068528) / 4)
    assert loss.item() == pytest.approx(-0.85 + 0.1 * 0.125)
    loss.backward()
    # d k3 / d new = 1 - r: t1 +0.5, t3 -1; scaled by kl_coef / 4.
    expected = torch.tensor([[-0.25, 0.1 * 0.5 / 4, 0.0, -0.5 - 0.1 / 4, 0.0]])
    torch.testing.assert_close(new.grad, expected)
    assert torch.isfinite(new.grad).all()


def test_kl_coef_without_reference_is_an_error():
    new, old, adv, mask, _ = case()
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(new, old, adv, mask, kl_coef=0.1)


def test_empty_mask_gives_zero_loss():
    new, old, adv, mask, _ = case()
    loss, stats = grpo_loss(new, old, adv, torch.zeros_like(mask))
    assert loss.item() == 0 and stats["num_tokens"] == 0
