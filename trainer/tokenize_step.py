"""A training step's trajectories, read from the store -> training sequences in `tokens.lance`.

    result = tokenize_step(run, tokenizer, step=3)      # reads trajectories, writes tokens

1. Read the step's stored trajectories (`Run.trajectories(split, step)`: typed message columns,
   with `trainable` set on sampled turns and the sampler's `logprobs`).
2. Advantages per group: reward minus the group's mean reward, divided by the group's standard
   deviation when `scale_by_std`. A group whose rewards are all equal carries no signal: its
   advantage is 0 and, with `skip_constant_groups`, it is not written at all.
3. Tokenize each conversation with the chat template (`trainer.tokenize.tokenize_trajectory`):
   the assistant mask covers the sampled turns (tool calls included), sampled logprobs are
   copied onto their tokens. Additional histories become sequences of their own with the same
   advantage (`{trajectory_id}/h{k}`), as in ART.
4. Write them with `Run.write_tokens` (upsert by sequence_id, so tokenizing a step again after a
   crash replaces its rows). Sequences without a trainable token, or longer than `max_length`,
   are left out and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

import artstore as art
from trainer.loss import group_advantages
from trainer.tokenize import tokenize_trajectory

# The message fields `chat_message` reads: parallel lists, entry i of each is message i.
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "trainable", "logprobs")
COLUMNS = ("trajectory_id", "group_id", "log_id", "reward", "tools", "additional_histories",
           *(f"message_{f}" for f in MESSAGE_FIELDS))


@dataclass(frozen=True)
class TokenizedStep:
    """What `tokenize_step` wrote for one step."""

    step: int
    version: int  # tokens table version after the write
    num_sequences: int
    num_tokens: int
    num_trainable: int  # tokens that enter the loss
    skipped_groups: int  # groups with equal rewards (no signal)
    skipped_too_long: int  # sequences longer than max_length


def tokenize_step(
    run: art.Run,
    tokenizer: Any,
    step: int,
    *,
    split: str = "train",
    scale_by_std: bool = True,
    skip_constant_groups: bool = True,
    max_length: int | None = None,
) -> TokenizedStep:
    """Tokenize the trajectories of `step`/`split` stored in `run` into its tokens table."""
    table = run.trajectories(split=split, step=step).select(list(COLUMNS))
    rows = table.to_pylist()
    advantages = _advantages(rows, scale_by_std)
    name = tokenizer_name(tokenizer)
    out: list[dict[str, Any]] = []
    constant_groups, too_long = set(), 0
    for row, advantage in zip(rows, advantages, strict=True):
        if skip_constant_groups and advantage is None:
            constant_groups.add(row["group_id"])
            continue
        conversations = [(row["trajectory_id"], messages_of(row), row["tools"])]
        for k, history in enumerate(row["additional_histories"] or []):
            conversations.append((f"{row['trajectory_id']}/h{k}", history["messages"], history["tools"]))
        for sequence_id, messages, tools in conversations:
            chat = [chat_message(m) for m in messages or []]
            if not any(m["trainable"] for m in chat):
                continue
            tokens = tokenize_trajectory(tokenizer, chat, json.loads(tools) if tools else None)
            if max_length is not None and len(tokens) > max_length:
                too_long += 1
                continue
            out.append({
                "sequence_id": sequence_id, "trajectory_id": row["trajectory_id"],
                "group_id": row["group_id"], "log_id": row["log_id"], "step": step, "split": split,
                "input_ids": tokens.input_ids, "assistant_mask": tokens.assistant_mask,
                "logprobs": tokens.logprobs, "reward": row["reward"],
                "advantage": advantage or 0.0, "tokenizer": name,
            })  # fmt: skip
    version = run.write_tokens(out) if out else run.tokens_table().version()
    return TokenizedStep(
        step=step,
        version=version,
        num_sequences=len(out),
        num_tokens=sum(len(r["input_ids"]) for r in out),
        num_trainable=sum(sum(r["assistant_mask"]) for r in out),
        skipped_groups=len(constant_groups),
        skipped_too_long=too_long,
    )


def _advantages(rows: list[dict[str, Any]], scale_by_std: bool) -> list[float | None]:
    """Each trajectory's group advantage; None for trajectories of groups with equal rewards."""
    if not rows:
        return []
    ids = {g: i for i, g in enumerate(dict.fromkeys(r["group_id"] for r in rows))}
    group = torch.tensor([ids[r["group_id"]] for r in rows])
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
    advantages = group_advantages(rewards, group, scale_by_std=scale_by_std).tolist()
    spread = {g: set() for g in ids}
    for r in rows:
        spread[r["group_id"]].add(r["reward"])
    return [a if len(spread[r["group_id"]]) > 1 else None for r, a in zip(rows, advantages, strict=True)]


def messages_of(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A trajectories row's messages (its message_* lists) as one dict of fields per message."""
    lists = [row[f"message_{f}"] or [] for f in MESSAGE_FIELDS]
    return [dict(zip(MESSAGE_FIELDS, values, strict=True)) for values in zip(*lists, strict=True)]


def chat_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """One stored message (from `messages_of`, or a struct of an additional history) as the chat dict that
    `tokenize_trajectory` takes: OpenAI's fields plus `trainable` and `logprobs`."""
    message: dict[str, Any] = {"role": row["role"], "content": row["content"]}
    if row.get("name"):
        message["name"] = row["name"]
    if row.get("tool_calls"):
        message["tool_calls"] = [
            {"id": c["id"], "type": c["type"] or "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in row["tool_calls"]
        ]  # fmt: skip
    if row.get("tool_call_id"):
        message["tool_call_id"] = row["tool_call_id"]
    message["trainable"] = bool(row.get("trainable"))
    message["logprobs"] = row.get("logprobs")
    return message


def tokenizer_name(tokenizer: Any) -> str:
    """The tokenizer's Hugging Face name or path, or (for one built in code) a hash of its
    vocabulary and chat template: what the tokens table records as `tokenizer`."""
    if getattr(tokenizer, "name_or_path", None):
        return str(tokenizer.name_or_path)
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    blob = (vocab + "\n" + (tokenizer.chat_template or "")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]
