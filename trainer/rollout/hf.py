"""Rollouts with Hugging Face `generate` on the live (peft) model, on the CPU or a GPU.

    trajectories = sample(model, tokenizer, messages, tools=tools, n=8, max_new_tokens=16)
    for t in trajectories:
        t.reward = score(t)                          # the caller's reward function

Each returned `artstore.Trajectory` is `messages` followed by one sampled assistant turn, an
openai `Choice` whose `logprobs.content` holds, per sampled token, its text, its UTF-8 bytes and
its log-probability (natural log) under the model's raw distribution, i.e. before temperature,
top-k and top-p: what the trainer's policy computes, so an on-policy importance ratio is 1. The
end-of-turn token, when sampled, is the last entry (its text is not part of the content), as a
vLLM sampler reports it. Text in Hermes/Qwen `<tool_call>{json}</tool_call>` blocks becomes
the Choice's `tool_calls` (finish reason `tool_calls`).

The prompt is rendered with the same chat template, and the same message normalisation, as the
trainer's tokenizer (`trainer.tokenize.template_messages`), so prompt tokens agree with the
tokens trained on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob

import artstore as art
from trainer.tokenize import template_messages

TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def prompt_ids(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Mapping] | None = None) -> list[int]:
    """Token ids of `messages` (dicts or Choices) with the generation prompt appended."""
    chat = template_messages([as_message(m) for m in messages])
    text = tokenizer.apply_chat_template(chat, tools=tools, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def as_message(item: Any) -> dict[str, Any]:
    """A chat message dict from a message dict or an openai `Choice`."""
    if isinstance(item, art.Choice):
        return item.message.model_dump(mode="json", exclude_none=True)
    return dict(item)


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's eos and the model's generation eos ids (a list in e.g. Qwen's config)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    messages: Sequence[Any],
    *,
    tools: Sequence[Mapping] | None = None,
    n: int = 8,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    parse_tool_calls: bool = True,
) -> list[art.Trajectory]:
    """`n` continuations of `messages`: one trajectory each, reward 0 (set by the caller)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, messages, tools)], device=device)
    stops = stop_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or 0,  # 0 disables top-k (None would mean HF's default of 50)
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
    finally:
        model.train(was_training)
    new = out.sequences[:, ids.shape[1] :].tolist()
    # Raw logits per generated position: [n, T, V] -> the sampled token's log-probability.
    logits = torch.stack(out.logits, dim=1).float()
    picked = torch.tensor(new, device=logits.device).unsqueeze(-1)
    logprobs = (logits.gather(-1, picked).squeeze(-1) - logits.logsumexp(-1)).tolist()
    prior = list(messages)
    return [
        art.Trajectory(
            messages_and_choices=[*prior, choice_from_tokens(tokenizer, i, tokens, lps, stops, parse_tool_calls)],
            tools=list(tools) if tools is not None else None,
            reward=0.0,
        )
        for i, (tokens, lps) in enumerate(zip(new, logprobs, strict=True))
    ]


def choice_from_tokens(tokenizer: Any, index: int, tokens: list[int], logprobs: list[float], stops: list[int],
                       parse_tool_calls: bool = True) -> art.Choice:
    """One sampled turn (token ids and their logprobs) as an openai Choice. Tokens after the
    first stop token are ignored (padding); the stop token is the last logprobs entry."""
    end = next((k for k, t in enumerate(tokens) if t in stops), None)
    sampled = tokens if end is None else tokens[: end + 1]
    content_ids = sampled if end is None else sampled[:-1]
    text = tokenizer.decode(content_ids, skip_special_tokens=False)
    entries = []
    for token, lp in zip(sampled, logprobs, strict=False):
        piece = tokenizer.decode([token], skip_special_tokens=False)
        entries.append(ChatCompletionTokenLogprob(
            token=piece, logprob=lp, bytes=list(piece.encode("utf-8")), top_logprobs=[]))  # fmt: skip
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = "stop" if end is not None else "length"
    calls = _tool_calls(text, index) if parse_tool_calls else []
    if calls:
        head = text[: text.find("<tool_call>")].strip()
        message = {"role": "assistant", "content": head or None, "tool_calls": calls}
        finish = "tool_calls" if end is not None else "length"
    return art.Choice(
        index=index,
        finish_reason=finish,
        message=message,
        logprobs=ChoiceLogprobs(content=entries),
    )


def _tool_calls(text: str, index: int) -> list[dict[str, Any]]:
    """Hermes/Qwen tool calls in `text`; [] unless every block is valid JSON with a name. Ids are
    deterministic (`call_{choice}_{k}`), so a rollout sampled again logs the same content."""
    calls = []
    for k, block in enumerate(TOOL_CALL.findall(text)):
        try:
            parsed = json.loads(block)
        except json.JSONDecodeError:
            return []
        if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
            return []
        arguments = parsed.get("arguments", {})
        calls.append({
            "id": f"call_{index}_{k}", "type": "function",
            "function": {"name": parsed["name"],
                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
        })  # fmt: skip
    return calls
