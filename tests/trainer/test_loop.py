"""train_step over batches loaded from the store: accumulation, KL against the base, empty steps."""

import pytest
import torch

import artstore as art
from tests.trainer.test_tokenize_step import trajectory
from trainer.loop import make_optimizer, step_batches, train_step
from trainer.lora import add_lora, trainable_parameters
from trainer.tiny import build_tiny_model_and_tokenizer
from trainer.tokenize_step import tokenize_step


@pytest.fixture
def run(tmp_path, tokenizer):
    model = art.TrainableModel(name="loop", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])
    groups = [art.TrajectoryGroup([trajectory(tokenizer, 3 * g + i, float(i)) for i in range(3)]) for g in range(2)]
    model.log_sync(groups, split="train", step=0)
    assert tokenize_step(model.run, tokenizer, step=0).num_sequences == 6
    return model.run


def lora_model(nonzero=True):
    model, _ = build_tiny_model_and_tokenizer(seed=0)
    torch.manual_seed(0)
    model = add_lora(model, r=4, alpha=8)
    if nonzero:
        with torch.no_grad():
            for p in trainable_parameters(model):
                p.normal_(0, 0.05)
    return model


def test_micro_batches_accumulate_to_the_same_update(run):
    updates, losses = [], []
    for batch_size in (64, 2):  # one micro-batch of 6 sequences, or three of 2
        model = lora_model()
        before = [p.detach().clone() for p in trainable_parameters(model)]
        sgd = torch.optim.SGD(trainable_parameters(model), lr=1.0)
        batches = step_batches(run, 0, device="cpu", pad_token_id=0, row_length=512, batch_size=batch_size)
        result = train_step(model, sgd, batches, learning_rate=0.5, max_grad_norm=1e9)
        assert result.num_batches == (1 if batch_size == 64 else 3)
        assert result.num_trainable == sum(r["num_trainable"] for r in run.tokens(step=0).to_pylist())
        assert result.grad_norm > 0 and result.learning_rate == 0.5 and result.tokens_per_s > 0
        updates.append([p.detach() - b for p, b in zip(trainable_parameters(model), before, strict=True)])
        losses.append(result.loss)
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for one, accumulated in zip(*updates, strict=True):
        torch.testing.assert_close(one, accumulated, rtol=1e-4, atol=1e-7)


def test_kl_against_the_base_model(run):
    fresh = lora_model(nonzero=False)  # LoRA B starts at 0: the policy is the base model
    result = train_step(fresh, make_optimizer(fresh), step_batches(run, 0, device="cpu", pad_token_id=0),
                        learning_rate=1e-3, beta=0.1)
    assert result.kl == pytest.approx(0.0, abs=1e-7)
    moved = lora_model()
    result = train_step(moved, make_optimizer(moved), step_batches(run, 0, device="cpu", pad_token_id=0),
                        learning_rate=1e-3, beta=0.1)
    assert result.kl > 0 and result.loss == pytest.approx(result.policy_loss + 0.1 * result.kl, rel=1e-4)


def test_a_step_with_nothing_to_train_changes_nothing(run):
    model = lora_model()
    before = [p.detach().clone() for p in trainable_parameters(model)]
    result = train_step(model, make_optimizer(model), step_batches(run, 5, device="cpu", pad_token_id=0),
                        learning_rate=1.0)
    assert (result.num_batches, result.num_trainable, result.loss, result.grad_norm) == (0, 0, 0.0, 0.0)
    for p, b in zip(trainable_parameters(model), before, strict=True):
        assert torch.equal(p, b)
