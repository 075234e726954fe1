"""One chat completion request -> OpenAI choices, with Hugging Face `generate` on a causal LM.

    choices, usage = complete(model, tokenizer, messages, tools, Sampling(n=4, logprobs=True))

The prompt is rendered by the trainer's own chat-template code (`trainer.rollout.hf.prompt_ids`),
so the tokens sampled after it are the tokens trained on. Per choice:

- `logprobs.content`: one entry per sampled token (the end-of-turn token included, last, as vLLM
  reports it), natural-log probability under the model's raw distribution (before temperature
  and top-p: what the trainer's policy computes), with `top_logprobs` alternatives when asked.
- `stop` strings end a choice where they first appear: the content is cut before the string,
  the tokens up to the one that completed it are kept, finish reason "stop" (OpenAI's rule).
- Text in `<tool_call>` blocks becomes `message.tool_calls` (finish reason "tool_calls") when
  the request offered tools (see `trainer.serve.tool_calls`).
- `temperature` 0 is greedy decoding; `seed` makes sampling repeatable (a private RNG state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.rollout.hf import as_message, stop_token_ids
from trainer.serve.tool_calls import parse_tool_calls
from trainer.tokenize import template_messages


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request. `max_tokens` counts generated tokens."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None
    token_ids: bool = False  # vLLM's return_token_ids: the choice's sampled ids, the prompt's ids
    tokens_as_ids: bool = False  # vLLM's return_tokens_as_token_ids: logprob tokens as "token_id:N"
    template_kwargs: tuple[tuple[str, Any], ...] = ()  # vLLM's chat_template_kwargs


@torch.no_grad()
def complete(model: Any, tokenizer: Any, messages: Sequence[Mapping[str, Any]],
             tools: Sequence[Mapping[str, Any]] | None, sampling: Sampling) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The request's `sampling.n` choices (OpenAI dicts) and its usage (token counts)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, messages, tools, dict(sampling.template_kwargs))], device=device)
    stops = stop_token_ids(model, tokenizer)
    greedy = sampling.temperature == 0
    settings: dict[str, Any] = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        # Greedy decoding refuses num_return_sequences > 1: give it the prompt n times instead.
        inputs = ids.expand(sampling.n, -1) if greedy else ids
        out = model.generate(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=sampling.max_tokens,
            num_return_sequences=1 if greedy else sampling.n, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True, output_logits=True, **settings, **_stop_strings(tokenizer, sampling),
        )  # fmt: skip
    new = out.sequences[:, ids.shape[1]:].tolist()
    logits = torch.stack(out.logits, dim=1).float()  # [n, T, V], raw (before temperature)
    logprobs = logits - logits.logsumexp(-1, keepdim=True)
    choices = [
        _choice(tokenizer, i, tokens, logprobs[i], stops, sampling, offer_tools=bool(tools))
        for i, tokens in enumerate(new)
    ]
    completion = 0
    for c in choices:
        sampled = c.pop("_tokens")
        completion += len(sampled)
        if sampling.token_ids:
            c["token_ids"] = sampled
    usage = {"prompt_tokens": ids.shape[1], "completion_tokens": completion,
             "total_tokens": ids.shape[1] + completion}
    if sampling.token_ids:
        usage["prompt_token_ids"] = ids[0].tolist()  # the app moves it to the response's top level
    return choices, usage


def prompt_ids(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Mapping[str, Any]] | None,
               template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """The prompt's token ids, rendered as the trainer renders it (`trainer.rollout.hf.prompt_ids`),
    plus any chat template variables the request gave."""
    chat = template_messages([as_message(m) for m in messages])
    text = tokenizer.apply_chat_template(chat, tools=tools, add_generation_prompt=True, tokenize=False,
                                         **(template_kwargs or {}))
    return tokenizer.encode(text, add_special_tokens=False)


def _stop_strings(tokenizer: Any, sampling: Sampling) -> dict[str, Any]:
    """generate()'s early stop on `stop` strings (the cut itself is `_stop_cut`'s)."""
    return {"stop_strings": list(sampling.stop), "tokenizer": tokenizer} if sampling.stop else {}


def _choice(tokenizer: Any, index: int, tokens: list[int], logprobs: torch.Tensor, stops: list[int],
            sampling: Sampling, offer_tools: bool) -> dict[str, Any]:
    end = next((k for k, t in enumerate(tokens) if t in stops), None)
    sampled = tokens if end is None else tokens[: end + 1]  # after the stop token: padding
    content_ids = sampled if end is None else sampled[:-1]
    text = tokenizer.decode(content_ids, skip_special_tokens=False)
    finish = "stop" if end is not None else "length"
    cut = _stop_cut(tokenizer, content_ids, sampling.stop)
    if cut is not None:
        kept, text = cut
        sampled, finish = content_ids[:kept], "stop"
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if offer_tools:
        head, calls = parse_tool_calls(text, index)
        if calls:
            message = {"role": "assistant", "content": head, "tool_calls": calls}
            finish = "tool_calls" if finish == "stop" else finish
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": finish,
                              "logprobs": None, "_tokens": sampled}
    if sampling.logprobs:
        choice["logprobs"] = {"content": _token_logprobs(tokenizer, sampled, logprobs, sampling)}
    return choice


def _stop_cut(tokenizer: Any, tokens: list[int], stop: tuple[str, ...]) -> tuple[int, str] | None:
    """(tokens kept: through the one that completes the first stop string, the text before the
    string), or None when no stop string appears."""
    if not stop:
        return None
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    found = [(text.find(s), s) for s in stop if s and s in text]
    if not found:
        return None
    at, s = min(found)
    for k in range(1, len(tokens) + 1):  # the first prefix whose text holds the whole string
        if len(tokenizer.decode(tokens[:k], skip_special_tokens=False)) >= at + len(s):
            return k, text[:at]
    return len(tokens), text[:at]


def _token_logprobs(tokenizer: Any, tokens: list[int], logprobs: torch.Tensor,
                    sampling: Sampling) -> list[dict[str, Any]]:
    """OpenAI's per-token entries: token text, its UTF-8 bytes, logprob and `top` alternatives."""
    entries = []
    for k, token in enumerate(tokens):
        row = logprobs[k]
        alternatives = []
        if sampling.top_logprobs:
            values, ids = row.topk(sampling.top_logprobs)
            alternatives = [_entry(tokenizer, int(i), float(v), sampling.tokens_as_ids)
                            for v, i in zip(values, ids, strict=True)]
        entries.append({**_entry(tokenizer, token, float(row[token]), sampling.tokens_as_ids),
                        "top_logprobs": alternatives})
    return entries


def _entry(tokenizer: Any, token: int, logprob: float, as_id: bool) -> dict[str, Any]:
    piece = f"token_id:{token}" if as_id else tokenizer.decode([token], skip_special_tokens=False)
    return {"token": piece, "logprob": logprob, "bytes": list(piece.encode("utf-8"))}
