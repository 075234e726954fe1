"""Rollouts with vLLM on a GPU: the base model plus the run's latest adapter, via `LoRARequest`.

    sampler = VLLMSampler("Qwen/Qwen2.5-0.5B-Instruct", max_lora_rank=8)
    sampler.load_latest_adapter(model.run)          # after each training step
    trajectories = sampler.sample(messages, tools=tools, n=8, max_new_tokens=256, seed=step)

The only module that imports vllm, and only when a sampler is built (importing this module needs
no vllm). It returns the same `artstore.Trajectory` objects as `trainer.rollout.hf`: prompts are
rendered by the same chat-template code (`prompt_ids`), sampled turns become openai `Choice`s with
per-token logprobs (vLLM reports the sampled token's logprob from the raw model output, before
temperature and top-p, as the trainer computes it).

UNTESTED HERE: the development machines have no GPU and no vllm, so this module has never run in
this repository's test suite. It follows vLLM's documented offline API (`LLM(enable_lora=True,
max_lora_rank=...)`, `LLM.generate(prompts, SamplingParams, lora_request=LoRARequest(name,
int_id, path))`, `{"prompt_token_ids": [...]}` prompts, `CompletionOutput.token_ids` and
`.logprobs`, a list of {token_id: Logprob}). Use it where `available()` is true.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import torch

import artstore as art
from trainer.rollout.hf import choice_from_tokens, prompt_ids


def available() -> bool:
    """True when vllm is importable and a CUDA GPU is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMSampler:
    """A vLLM engine for `base_model` (a local folder or a cached Hugging Face name) with LoRA on.

    `max_lora_rank` must be at least the adapter's rank. `gpu_memory_utilization` is the share of
    GPU memory vLLM may take: leave room for the trainer when both share one GPU. Other keyword
    arguments go to `vllm.LLM` as given.
    """

    def __init__(self, base_model: str, *, max_lora_rank: int = 8, gpu_memory_utilization: float = 0.4,
                 seed: int = 0, **engine_kwargs: Any):
        from vllm import LLM

        self.llm = LLM(model=base_model, enable_lora=True, max_loras=1, max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora_request: Any = None  # None: the base model
        self.step: int | None = None

    def load_latest_adapter(self, run: art.Run) -> int | None:
        """Sample from the run's latest ready checkpoint from now on (downloaded first when the
        store is a bucket); returns its step, or None (the base model) when there is none."""
        from vllm.lora.request import LoRARequest

        if run.latest_checkpoint_step() is None:
            self.lora_request, self.step = None, None
            return None
        checkpoint, path = run.checkpoint("latest")
        # vLLM caches adapters by integer id: a new checkpoint needs a new id (ids start at 1).
        self.lora_request = LoRARequest(f"{run.name}-{checkpoint.step:04d}", checkpoint.step + 1, str(path))
        self.step = checkpoint.step
        return checkpoint.step

    def sample(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[Mapping] | None = None,
        n: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        parse_tool_calls: bool = True,
    ) -> list[art.Trajectory]:
        """`n` continuations of `messages` with the current adapter: one trajectory each, reward 0."""
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k or -1,
                                max_tokens=max_new_tokens, logprobs=1, seed=seed)
        prompt = {"prompt_token_ids": prompt_ids(self.tokenizer, messages, tools)}
        [output] = self.llm.generate([prompt], params, lora_request=self.lora_request, use_tqdm=False)
        stops = sorted({self.tokenizer.eos_token_id, *_generation_eos(self.llm)} - {None})
        trajectories = []
        for i, completion in enumerate(output.outputs):
            tokens = list(completion.token_ids)
            # Each position's dict holds the sampled token (plus the top-1 when it differs).
            logprobs = [completion.logprobs[k][t].logprob for k, t in enumerate(tokens)]
            choice = choice_from_tokens(self.tokenizer, i, tokens, logprobs, stops, parse_tool_calls)
            trajectories.append(art.Trajectory(messages_and_choices=[*messages, choice],
                                               tools=list(tools) if tools is not None else None, reward=0.0))
        return trajectories


def _generation_eos(llm: Any) -> list[int]:
    """The eos ids of the model's generation config (Qwen lists two), which vLLM also stops on."""
    try:
        config = llm.llm_engine.model_config.try_get_generation_config()
    except AttributeError:  # an engine version without it: the tokenizer's eos is enough
        return []
    eos = (config or {}).get("eos_token_id")
    return eos if isinstance(eos, list) else [eos] if eos is not None else []
