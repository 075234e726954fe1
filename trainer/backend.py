"""LocalBackend: ART's backend interface, training a LoRA adapter in this process from the store.

    model = art.TrainableModel(name="agent-001", project="demo", base_model="tiny")
    await model.register(LocalBackend())           # loads the model, resumes from the store
    await model.train(groups, config=art.TrainConfig(learning_rate=1e-4))

`TrainableModel.train` logs the groups (split "train") at the current step, then iterates
`_train_model`, which does one step, all through the store:

    step = latest ready checkpoint (0 if none)
    tokenize_step(run, step)         trajectories.lance -> tokens.lance (advantages per group)
    train_step(step_batches(...))    tokens.lance -> packed batches -> GRPO -> one AdamW update
    save_checkpoint(step + 1)        adapter + optimizer -> checkpoints/{step+1:04d}/, row ready
    yield loss, grad norm, learning rate, tokens/s, seconds

and `train` logs those metrics at the new step. The step is the store's: a process killed at any
point resumes, on `register`, from the latest ready checkpoint (adapter and optimizer state), and
trains that step again (the tokens upsert; the checkpoint row was never ready).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import artstore as art
from trainer.checkpoint import load_latest_checkpoint, save_checkpoint
from trainer.distributed import is_main, on_main
from trainer.loop import make_optimizer, step_batches, train_step
from trainer.lora import add_lora
from trainer.tiny import load_model_and_tokenizer
from trainer.tokenize_step import tokenize_step

log = logging.getLogger(__name__)


@dataclass
class _Policy:
    """What the backend holds for one registered model."""

    model: Any  # peft.PeftModel
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    step: int  # the checkpoint step the adapter holds
    base_model: str


class LocalBackend:
    """Trains LoRA adapters with torch + peft in this process (CPU or one GPU).

    `model_name_or_path`: the base model to load, a local folder or a name in the Hugging Face
    cache (nothing is downloaded), or "tiny" for the tiny model built in code; None loads the
    registered model's `base_model`. `device`: "cpu", "cuda", or None (CUDA when available).
    `lora_r`/`lora_alpha`: the adapter's rank and scale. `seed`: the tiny model's weights and
    the adapter's initialisation. `row_length`: tokens per packed row (longer sequences are left
    out of training and counted); `batch_size`: sequences per micro-batch. `clip_epsilon`,
    `max_grad_norm`, `scale_rewards` (divide advantages by the group's std) are the GRPO
    settings; `dev_config` keys of the same names override them per `train()` call.

    Under torchrun (`trainer.distributed`), rank 0 calls `model.train` and the other ranks
    `train_shard`: every rank trains its shard of the step, rank 0 alone logs and saves.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        device: str | torch.device | None = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        row_length: int = 2048,
        batch_size: int = 64,
        clip_epsilon: float = 0.2,
        max_grad_norm: float = 1.0,
        scale_rewards: bool = True,
    ):
        self.model_name_or_path = model_name_or_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.lora_r, self.lora_alpha, self.seed, self.dtype = lora_r, lora_alpha, seed, dtype
        self.row_length, self.batch_size = row_length, batch_size
        self.defaults = {
            "clip_epsilon": clip_epsilon,
            "max_grad_norm": max_grad_norm,
            "scale_rewards": scale_rewards,
        }
        self._policies: dict[str, _Policy] = {}

    def __repr__(self) -> str:
        return f"LocalBackend({self.model_name_or_path!r}, device={str(self.device)!r})"

    # -- ART's backend interface -----------------------------------------------------------
    async def register(self, model: art.TrainableModel) -> None:
        """Load the base model with a fresh adapter, then the run's latest ready checkpoint."""
        self._policies[_key(model)] = await asyncio.to_thread(self._load, model)

    async def _get_step(self, model: art.TrainableModel) -> int:
        """The step of the run's latest ready checkpoint in the store (0 when there is none)."""
        return await asyncio.to_thread(lambda: model.run.latest_checkpoint_step() or 0)

    async def _train_model(
        self,
        model: art.TrainableModel,
        trajectory_groups: Sequence[art.TrajectoryGroup],
        config: art.TrainConfig,
        dev_config: dict[str, Any],
        verbose: bool = False,
    ) -> AsyncIterator[dict[str, float]]:
        """Train one step on the trajectories the store holds for the current step (the groups
        given were just logged there by `train()`), save the checkpoint of the next step, and
        yield the step's metrics. A step with nothing to train (every group's rewards equal)
        still advances: its checkpoint holds the same adapter, and grad norm and loss are 0."""
        policy = self.policy_of(model)
        metrics = await asyncio.to_thread(self._train_step, model, policy, config, dev_config, verbose)
        yield metrics

    async def train_shard(self, model: art.TrainableModel) -> dict[str, float]:
        """Under torchrun, on every rank but 0: train this rank's shard of the step rank 0 is
        training. Rank 0 calls `model.train(groups, config)` (it alone logs, tokenizes and saves,
        and its config holds for all ranks); each other rank calls this once per such call.
        Returns the step's metrics, the ones rank 0 logs."""
        if is_main():
            raise art.BackendError("rank 0 trains with `await model.train(groups)`; train_shard() is "
                                   "what the other ranks call meanwhile")
        policy = self.policy_of(model)
        return await asyncio.to_thread(self._train_step, model, policy, art.TrainConfig(), {}, False)

    async def _delete_checkpoint_files(self, model: art.TrainableModel, steps_to_keep: list[int]) -> None:
        """Delete the files of every ready checkpoint whose step is not in `steps_to_keep`; rows
        stay as they are (retention marks them). Checkpoints still saving are never touched."""
        keep = set(steps_to_keep)

        def delete() -> None:
            run = model.run
            rows = run.checkpoints().select(["step", "status"]).to_pylist()
            for row in rows:
                if row["status"] == "ready" and row["step"] not in keep:
                    run.delete_checkpoint_files(row["step"])

        await asyncio.to_thread(delete)

    # -- for rollouts ------------------------------------------------------------------------
    def policy_of(self, model: art.TrainableModel) -> _Policy:
        """The live policy (peft model, tokenizer, optimizer) of a registered model."""
        try:
            return self._policies[_key(model)]
        except KeyError:
            raise art.BackendError(
                f"{model.project}/{model.name} is not registered with this backend: "
                "call `await model.register(backend)` first"
            ) from None

    def model_and_tokenizer(self, model: art.TrainableModel) -> tuple[Any, Any]:
        """The live peft model (the current policy, for sampling) and its tokenizer."""
        policy = self.policy_of(model)
        return policy.model, policy.tokenizer

    # -- internals ---------------------------------------------------------------------------
    def _load(self, model: art.TrainableModel) -> _Policy:
        name = self.model_name_or_path or model.base_model
        try:
            base, tokenizer = load_model_and_tokenizer(name, dtype=self.dtype, device=self.device, seed=self.seed)
        except OSError as e:
            raise art.BackendError(
                f"cannot load base model {name!r} locally ({e}); give a local folder, a model in the "
                "Hugging Face cache, or LocalBackend('tiny') for the tiny model built in code"
            ) from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            peft_model = add_lora(base, r=self.lora_r, alpha=self.lora_alpha)
        peft_model.eval()
        optimizer = make_optimizer(peft_model)
        step = load_latest_checkpoint(model.run, peft_model, optimizer) or 0
        log.info("%s: %s with a rank-%d adapter at step %d on %s", model.name, name, self.lora_r, step,
                 self.device)
        return _Policy(peft_model, tokenizer, optimizer, step, str(name))

    def _train_step(self, model: art.TrainableModel, policy: _Policy, config: art.TrainConfig,
                    dev_config: dict[str, Any], verbose: bool) -> dict[str, float]:
        settings = {**self.defaults, **{k: v for k, v in dev_config.items() if k in self.defaults}}
        run = model.run

        def tokenize() -> tuple:  # on rank 0 only; every rank gets what it returns (and its settings)
            step = run.latest_checkpoint_step() or 0
            tokens = tokenize_step(run, policy.tokenizer, step, scale_by_std=settings["scale_rewards"],
                                   max_length=self.row_length)
            tokenized = f"{tokens.num_sequences} sequences ({tokens.skipped_groups} groups without signal skipped)"
            return step, tokens.version, tokenized, config, settings

        step, version, tokenized, config, settings = on_main(tokenize)
        if step != policy.step:  # another process trained this run meanwhile: catch up
            policy.step = load_latest_checkpoint(run, policy.model, policy.optimizer) or 0
        batches = step_batches(run, step, device=self.device, pad_token_id=policy.tokenizer.pad_token_id,
                               row_length=self.row_length, batch_size=self.batch_size, version=version)
        result = train_step(policy.model, policy.optimizer, batches, learning_rate=config.learning_rate,
                            beta=config.beta, clip_epsilon=settings["clip_epsilon"],
                            max_grad_norm=settings["max_grad_norm"])
        on_main(lambda: save_checkpoint(run, policy.model, step + 1, base_model=policy.base_model,
                                        optimizer=policy.optimizer).step)
        if not is_main():  # rank 0 saved it: load it, so every rank holds the stored adapter
            load_latest_checkpoint(run, policy.model, policy.optimizer)
        policy.step = step + 1
        if verbose and is_main():
            log.info("step %d: %s, %s", step, tokenized, result)
        metrics = {
            "loss/train": result.loss,
            "loss/grad_norm": result.grad_norm,
            "loss/learning_rate": result.learning_rate,
            "perf/tokens_per_s": result.tokens_per_s,
            "perf/seconds": result.seconds,
        }
        if config.beta > 0:
            metrics["loss/kl"] = result.kl
        return metrics


def _key(model: art.TrainableModel) -> str:
    return f"{model.base_path}|{model.project}|{model.name}"
