"""`backend.train` (ART 0.5.23's call): its arguments, where its tokens come from, what it logs."""

import inspect
from pathlib import Path

import pytest
import torch

import artstore as art
from trainer import LocalBackend
from trainer.art_loss import ArtObjective
from trainer.demo_tasks import hf_sampler, rollouts
from trainer.group_tokens import MissingLogprobsError, write_group_tokens
from trainer.loss import grpo_loss
from trainer.train_options import UNSUPPORTED, UnsupportedTrainArgumentError

# LocalBackend.train's parameters in openpipe-art 0.5.23 (art/local/backend.py), in order.
ART_PARAMETERS = [
    "model", "trajectory_groups", "learning_rate", "loss_fn", "loss_fn_config", "normalize_advantages",
    "adam_params", "kl_penalty_coef", "kl_penalty_reference_step", "kl_ref_adapter_path", "kl_penalty_source",
    "epsilon", "epsilon_high", "advantage_balance", "scale_rewards", "importance_sampling_level",
    "max_negative_advantage_importance_sampling_weight", "mask_prob_ratio", "kimi_k2_tau", "precalculate_logprobs",
    "allow_training_without_logprobs", "plot_tensors", "truncated_importance_sampling",
    "scale_learning_rate_by_reward_std_dev", "logprob_calculation_chunk_size", "packed_sequence_length",
    "num_trajectories_learning_rate_multiplier_power", "save_checkpoint", "optimizer_save_interval",
    "final_training_step", "grad_accumulation_sequences", "verbose",
]  # fmt: skip


@pytest.fixture
async def registered(tmp_path):
    model = art.TrainableModel(name="agent", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])
    backend = LocalBackend("tiny", device="cpu", row_length=512, serve="off")
    await model.register(backend)
    yield model, backend


def groups_for(backend, model, seed=0):
    """Sampled code-lookup groups, rewards set to alternate 0/1 so that every group has signal."""
    policy, tokenizer = backend.model_and_tokenizer(model)
    groups = rollouts(hf_sampler(policy, tokenizer), [111, 222, 333], n=6, seed=seed)
    for g in groups:
        for i, t in enumerate(g.trajectories):
            t.reward = float(i % 2)
    return groups


def test_train_has_art_0_5_23s_signature():
    assert list(inspect.signature(LocalBackend.train).parameters)[1:] == ART_PARAMETERS


@pytest.mark.parametrize("name,value", [(k, v) for k, v in {
    "loss_fn_config": {}, "adam_params": {"betas": (0.9, 0.99)}, "kl_penalty_reference_step": 0,
    "kl_ref_adapter_path": "/x", "advantage_balance": 0.5, "importance_sampling_level": "sequence",
    "precalculate_logprobs": True, "plot_tensors": True, "truncated_importance_sampling": 2.0,
    "scale_learning_rate_by_reward_std_dev": True, "num_trajectories_learning_rate_multiplier_power": 1.0,
    "final_training_step": 10, "grad_accumulation_sequences": 4}.items()])  # fmt: skip
async def test_an_argument_it_does_not_implement_is_refused_by_name(registered, name, value):
    model, backend = registered
    assert name in UNSUPPORTED
    with pytest.raises(UnsupportedTrainArgumentError, match=f"{name}="):
        await backend.train(model, groups_for(backend, model), **{name: value})
    assert await model.get_step() == 0  # nothing trained


@pytest.mark.parametrize("kwargs,match", [({"loss_fn": "grpo"}, "loss_fn"), ({"learning_rate": 0}, "learning_rate"),
                                          ({"kl_penalty_source": "x"}, "kl_penalty_source"),
                                          ({"packed_sequence_length": -1}, "packed_sequence_length")])
async def test_bad_values_are_refused_by_name(registered, kwargs, match):
    model, backend = registered
    with pytest.raises(UnsupportedTrainArgumentError, match=match):
        await backend.train(model, groups_for(backend, model), **kwargs)


async def test_train_trains_from_the_tokens_table_and_logs_nothing(registered):
    model, backend = registered
    groups = groups_for(backend, model)
    result = await backend.train(model, groups, learning_rate=1e-2, loss_fn="ppo", epsilon=0.1,
                                 kl_penalty_coef=0.05, packed_sequence_length=1024, optimizer_save_interval=2)
    assert isinstance(result, art.LocalTrainResult) and result.step == 1
    assert result.checkpoint_path and result.checkpoint_path.endswith("0001")
    assert {"loss/train", "loss/grad_norm", "loss/kl", "time/step_backend_train_s"} <= set(result.metrics)
    assert result.metrics["loss/grad_norm"] > 0
    run = model.run
    assert run.trajectories().num_rows == 0 and run.history().num_rows == 0  # ART: the caller logs
    tokens = run.tokens(step=0, split="train").to_pylist()
    assert tokens and all(r["log_id"].startswith("backend.train:") for r in tokens)
    trainable = [g for g in groups if len({t.reward for t in g.trajectories}) > 1]
    assert len({r["group_id"] for r in tokens}) == len(trainable)
    assert not (Path(result.checkpoint_path) / "optimizer.pt").exists()  # step 1: not a multiple of 2
    await model.log(groups, metrics=result.metrics, step=result.step, split="train")  # ART's pattern
    history = run.history().to_pylist()
    assert [r["step"] for r in history] == [1] and history[0]["loss/train"] == pytest.approx(result.metrics["loss/train"])

    second = await backend.train(model, groups_for(backend, model, seed=1), save_checkpoint=False,
                                 optimizer_save_interval=2)
    assert second.step == 2 and second.checkpoint_path is None  # as in ART: written, path not given
    assert await model.get_step() == 2 and (run.checkpoint(2)[1] / "optimizer.pt").exists()


async def test_a_retried_step_with_other_groups_gives_the_first_attempts_rows_no_weight(registered):
    model, backend = registered
    first, second = groups_for(backend, model, seed=0), groups_for(backend, model, seed=5)
    _, tokenizer = backend.model_and_tokenizer(model)
    write_group_tokens(model.run, tokenizer, first, 0)  # an attempt killed before its checkpoint
    await backend.train(model, second)
    rows = model.run.tokens(step=0, split="train").to_pylist()
    by_log = {}
    for r in rows:
        by_log.setdefault(r["log_id"], []).append(r["num_trainable"])
    assert len(by_log) == 2
    weights = sorted(sum(v) for v in by_log.values())
    assert weights[0] == 0 and weights[1] > 0


async def test_a_choice_without_logprobs_needs_allow_training_without_logprobs(registered):
    model, backend = registered
    groups = groups_for(backend, model)
    for g in groups:
        for t in g.trajectories:
            t.messages_and_choices[-1].logprobs = None
    with pytest.raises(MissingLogprobsError, match="allow_training_without_logprobs"):
        await backend.train(model, groups)
    result = await backend.train(model, groups, allow_training_without_logprobs=True)
    assert result.step == 1


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    new = -torch.rand(2, 6, generator=g) * 3
    old = new + torch.randn(2, 6, generator=g) * 0.3
    adv = torch.randn(2, 1, generator=g).expand(2, 6).clone()
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
    return new.requires_grad_(), old, adv, mask


def test_ppo_objective_equals_the_clipped_grpo_loss():
    new, old, adv, mask = _inputs()
    art_loss, _ = ArtObjective(ppo=True, epsilon=0.2)(new, old, adv, mask)
    grpo, _ = grpo_loss(new, old, adv, mask, clip_epsilon=0.2)
    assert float(art_loss.detach()) == pytest.approx(float(grpo.detach()), abs=1e-6)


def test_cispo_gradient_is_the_clipped_weight_times_the_advantage():
    new, old, adv, mask = _inputs(1)
    objective = ArtObjective()  # cispo: epsilon 1.0, epsilon_high 4.0
    loss, _ = objective(new, old, adv, mask)
    loss.backward()
    weight = torch.exp(new.detach() - old).clamp(0.0, 5.0)
    expected = torch.where(mask.bool(), -weight * adv / mask.sum(), torch.zeros_like(adv))
    assert torch.allclose(new.grad, expected, atol=1e-6)


def test_kl_penalty_shifts_the_advantage_by_the_centred_token_kl():
    new, old, adv, mask = _inputs(2)
    ref = new.detach() - torch.linspace(0, 1, 12).reshape(2, 6)
    coef = 0.5
    loss, stats = ArtObjective(kl_penalty_coef=coef)(new, old, adv, mask, ref)
    kl = torch.where(mask.bool(), new.detach() - ref, torch.zeros_like(ref))
    mean_kl = kl.sum() / mask.sum()
    shifted = adv + coef * torch.where(mask.bool(), mean_kl - kl, torch.zeros_like(kl))
    plain, _ = ArtObjective()(new, old, shifted, mask)
    assert float(loss.detach()) == pytest.approx(float(plain.detach()), abs=1e-6) and stats["kl"] == pytest.approx(float(mean_kl))
    with pytest.raises(ValueError, match="reference"):
        ArtObjective(kl_penalty_coef=coef)(new, old, adv, mask)
