"""One trajectory's chat messages -> token ids, assistant mask and sampled logprobs.

Pure functions of (tokenizer, messages, tools): no store, no torch.

How the mask is found, for any tokenizer that has a chat template:

1. Render the whole conversation to text once (`full`).
2. For each trainable assistant message i, render the prefix `messages[:i]` with the generation
   prompt (`head`) and the prefix `messages[:i+1]` (`through`). The text the model produced is
   `through[len(head):]`, cut just after the end-of-turn marker (the tokenizer's eos by default), so
   the role header before it and the separator after it stay unmasked. Templates that re-render
   earlier turns (so `full` does not start with `through`) are handled by finding that text in
   `full` after the previous span; if it is not there the template cannot be split and we raise.
3. Split `full` at those character spans and tokenize each piece on its own. A generated turn is
   then tokenized exactly as a sampler appends it after the prompt, and no token crosses a span
   boundary. Tokenizers that prepend a space to every piece (SentencePiece with a dummy prefix)
   instead tokenize `full` once and assign tokens to spans by their character offsets.

Logprobs given for a trainable turn (one float per sampled token, natural log) are copied onto
its tokens when the counts agree; a list one short (the sampler left out the end-of-turn token)
fills all but the last token; any other mismatch leaves NaN (unknown) rather than misalign.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Per-message fields that the store adds for training; chat templates never see them.
STORE_FIELDS = ("trainable", "logprobs")

NAN = math.nan


@dataclass(frozen=True)
class TokenizedTrajectory:
    """Token-level view of one trajectory; the three lists have the same length (tokens)."""

    input_ids: list[int]
    assistant_mask: list[int]  # 1 on tokens of trainable assistant turns, else 0
    logprobs: list[float]  # log-probability the sampler gave each token; NaN when unknown

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class _Span:
    start: int  # character offsets into the rendered conversation, end exclusive
    end: int
    logprobs: Sequence[float] | None
    ends_with_eot: bool  # the span ends with the end-of-turn marker


def tokenize_trajectory(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    end_of_turn: str | None = "eos",
    parse_tool_arguments: bool = True,
) -> TokenizedTrajectory:
    """Tokenize one conversation with `tokenizer`'s chat template and mark the trainable tokens.

    `messages` are OpenAI chat dicts plus the store's `trainable` (bool) and `logprobs`
    (list[float] or None) fields. `end_of_turn` is the text that closes a generated turn
    ("eos": the tokenizer's eos token; None: keep everything the template renders for the turn).
    With `parse_tool_arguments`, tool-call arguments given as JSON strings reach the template as
    objects, as Hugging Face templates expect.
    """
    chat = [_template_message(m, parse_tool_arguments) for m in messages]
    eot = tokenizer.eos_token if end_of_turn == "eos" else end_of_turn

    def render(k: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            chat[:k], tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    full = render(len(chat), False)
    spans: list[_Span] = []
    cursor = 0
    for i, message in enumerate(messages):
        if not message.get("trainable"):
            continue
        if message.get("role") != "assistant":
            raise ValueError(f"messages[{i}]: only assistant messages can be trainable")
        if i == 0:
            raise ValueError("messages[0]: a trainable assistant turn needs a prompt before it")
        head, through = render(i, True), render(i + 1, False)
        if not through.startswith(head):
            raise ValueError(
                f"messages[{i}]: the chat template renders the generation prompt differently "
                "from the start of the assistant turn; cannot locate the turn"
            )
        turn = _cut_after(through[len(head) :], eot)
        start = len(head) if full.startswith(through) else full.find(turn, cursor)
        if start < cursor or not turn:
            raise ValueError(
                f"messages[{i}]: assistant turn not found in the rendered conversation"
            )
        ends_with_eot = bool(eot) and turn.endswith(eot)
        spans.append(_Span(start, start + len(turn), message.get("logprobs"), ends_with_eot))
        cursor = start + len(turn)

    if _prepends_space(tokenizer):
        pieces = _tokens_by_offsets(tokenizer, full, spans)
    else:
        pieces = _tokens_by_pieces(tokenizer, full, spans)
    input_ids: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    for ids, span in pieces:
        input_ids.extend(ids)
        mask.extend([int(span is not None)] * len(ids))
        logprobs.extend(_align_logprobs(len(ids), span))
    return TokenizedTrajectory(input_ids, mask, logprobs)


def template_messages(
    messages: Sequence[Mapping[str, Any]], parse_tool_arguments: bool = True
) -> list[dict[str, Any]]:
    """`messages` as the chat template sees them when training (see `tokenize_trajectory`): a
    sampler renders its prompt from these, so prompt tokens and training tokens agree."""
    return [_template_message(m, parse_tool_arguments) for m in messages]


def _template_message(message: Mapping[str, Any], parse_tool_arguments: bool) -> dict[str, Any]:
    """What the chat template sees: no store fields, no None-valued optional keys."""
    out = {k: v for k, v in message.items() if k not in STORE_FIELDS and v is not None}
    out.setdefault("content", message.get("content"))
    if parse_tool_arguments and out.get("tool_calls"):
        out["tool_calls"] = [_parse_arguments(call) for call in out["tool_calls"]]
    return out


def _parse_arguments(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # a malformed call is trained on as the text the model wrote
    return {**call, "function": function}


def _cut_after(text: str, marker: str | None) -> str:
    """`text` up to and including the last `marker` (all of `text` if there is none)."""
    if not marker:
        return text
    at = text.rfind(marker)
    return text if at < 0 else text[: at + len(marker)]


def _prepends_space(tokenizer: Any) -> bool:
    """True when encoding a piece on its own adds a leading space (a SentencePiece dummy prefix)."""
    ids = tokenizer.encode("a", add_special_tokens=False) + tokenizer.encode(
        "b", add_special_tokens=False
    )
    return tokenizer.decode(ids) != "ab"


def _tokens_by_pieces(tokenizer: Any, full: str, spans: list[_Span]):
    """Tokenize the text between span boundaries piece by piece: [(ids, span or None), ...]."""
    out = []
    cursor = 0
    for span in [*spans, None]:
        gap_end = len(full) if span is None else span.start
        if gap_end > cursor:
            out.append((tokenizer.encode(full[cursor:gap_end], add_special_tokens=False), None))
        if span is not None:
            out.append(
                (tokenizer.encode(full[span.start : span.end], add_special_tokens=False), span)
            )
            cursor = span.end
    return out


def _tokens_by_offsets(tokenizer: Any, full: str, spans: list[_Span]):
    """Tokenize `full` once; a token belongs to the span that holds its first character."""
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    out: list[tuple[list[int], _Span | None]] = []
    for token_id, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        span = next((s for s in spans if s.start <= start < s.end), None)
        if out and out[-1][1] is span:
            out[-1][0].append(token_id)
        else:
            out.append(([token_id], span))
    return out


def _align_logprobs(n_tokens: int, span: _Span | None) -> list[float]:
    """The sampled logprobs for a span's `n_tokens` tokens, NaN where they cannot be matched."""
    given = None if span is None else span.logprobs
    if given is None:
        return [NAN] * n_tokens
    given = [NAN if v is None else float(v) for v in given]
    if len(given) == n_tokens:
        return given
    if len(given) == n_tokens - 1 and span.ends_with_eot:
        return [*given, NAN]
    return [NAN] * n_tokens
