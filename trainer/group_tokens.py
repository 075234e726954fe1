"""Trajectory groups given to `backend.train` -> training sequences in the store's tokens table.

    tokenized = write_group_tokens(run, tokenizer, groups, step=3)

ART 0.5.23's `backend.train(model, groups)` trains on the groups it is given and logs nothing
(the caller logs them, usually after training at `result.step`). To train from the store all the
same, the groups are tokenized here, exactly as `trainer.tokenize_step` tokenizes logged
trajectories (same chat template code, same advantages, additional histories as their own
sequences), and written to `tokens.lance` under split "train" at `step`; the loader then reads
them back from there.

Ids: the groups' content digest `D` (a hash of every message, tool and reward) names the call:
sequence `train@{step}/{D}/{g}/{t}` (`/h{k}` for additional history k), trajectory
`{D}/{g}/{t}`, group `{D}/{g}`, log id `backend.train:{D}`. The same groups trained again at
the same step (a retry after a crash) upsert the same rows. Rows of the step written by an
earlier call with other groups (a crashed attempt whose rollouts were not repeated exactly) are
rewritten with an empty assistant mask: they stay in the table, as the record of that attempt,
and carry no weight in this step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

import artstore as art
from trainer.loss import group_advantages
from trainer.tokenize import tokenize_trajectory
from trainer.tokenize_step import TokenizedStep, tokenizer_name

SPLIT = "train"


class MissingLogprobsError(art.BackendError):
    """A trainable Choice has no logprobs and `allow_training_without_logprobs` is False."""


def write_group_tokens(run: art.Run, tokenizer: Any, groups: Sequence[art.TrajectoryGroup], step: int, *,
                       scale_by_std: bool = True, max_length: int | None = None,
                       allow_training_without_logprobs: bool = False) -> TokenizedStep:
    """Tokenize `groups` into `run`'s tokens table at `step` (see the module docstring)."""
    digest = content_digest(groups)
    prefix = f"{SPLIT}@{step}/{digest}/"
    out: list[dict[str, Any]] = []
    skipped_groups = too_long = 0
    for g, group in enumerate(groups):
        rewards = torch.tensor([t.reward for t in group.trajectories], dtype=torch.float64)
        if len(set(rewards.tolist())) < 2:  # equal rewards: no signal
            skipped_groups += 1
            continue
        advantages = group_advantages(rewards, torch.zeros(len(rewards), dtype=torch.long), scale_by_std).tolist()
        for t, (trajectory, advantage) in enumerate(zip(group.trajectories, advantages, strict=True)):
            conversations = [("", trajectory.messages_and_choices, trajectory.tools)]
            conversations += [(f"/h{k}", h.messages_and_choices, h.tools)
                              for k, h in enumerate(trajectory.additional_histories)]
            for suffix, messages, tools in conversations:
                chat = [_chat_message(m, allow_training_without_logprobs) for m in messages]
                if not any(m["trainable"] for m in chat):
                    continue
                tokens = tokenize_trajectory(tokenizer, chat, tools)
                if max_length is not None and len(tokens) > max_length:
                    too_long += 1
                    continue
                out.append({
                    "sequence_id": f"{prefix}{g}/{t}{suffix}", "trajectory_id": f"{digest}/{g}/{t}",
                    "group_id": f"{digest}/{g}", "log_id": f"backend.train:{digest}", "step": step,
                    "split": SPLIT, "input_ids": tokens.input_ids, "assistant_mask": tokens.assistant_mask,
                    "logprobs": tokens.logprobs, "reward": float(trajectory.reward),
                    "advantage": float(advantage), "tokenizer": tokenizer_name(tokenizer),
                })  # fmt: skip
    _zero_weight_other_rows(run, step, prefix)
    version = run.write_tokens(out) if out else run.tokens_table().version()
    return TokenizedStep(step=step, version=version, num_sequences=len(out),
                         num_tokens=sum(len(r["input_ids"]) for r in out),
                         num_trainable=sum(sum(r["assistant_mask"]) for r in out),
                         skipped_groups=skipped_groups, skipped_too_long=too_long)  # fmt: skip


def content_digest(groups: Sequence[art.TrajectoryGroup]) -> str:
    """16 hex digits of a SHA-256 over the groups' messages, tools and rewards."""
    blob = json.dumps([[t.model_dump(mode="json", include={"messages_and_choices", "tools", "reward",
                                                            "additional_histories"})
                        for t in g.trajectories] for g in groups], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _chat_message(item: Any, allow_training_without_logprobs: bool) -> dict[str, Any]:
    """A message dict (never trained on) or a Choice (trained on, with its sampled logprobs) as
    the chat dict `tokenize_trajectory` takes, as the store's writer marks them."""
    if not isinstance(item, art.Choice):
        return {**dict(item), "trainable": False, "logprobs": None}
    message = item.message.model_dump(mode="json", exclude_none=True)
    message.setdefault("content", None)
    content = item.logprobs.content if item.logprobs is not None else None
    if content is None and not allow_training_without_logprobs:
        raise MissingLogprobsError(
            "a trainable Choice has no logprobs: request them (`logprobs=True` in "
            "chat.completions.create) or pass allow_training_without_logprobs=True (ratio 1 on its tokens)")
    return {**message, "trainable": True, "logprobs": [c.logprob for c in content] if content else None}


def _zero_weight_other_rows(run: art.Run, step: int, prefix: str) -> None:
    """Rewrite the step's rows that this call did not write with an all-zero assistant mask."""
    if run.token_count(step, SPLIT) == 0:
        return
    rows = run.tokens(step=step, split=SPLIT)
    stale = rows.filter(pc.invert(pc.starts_with(rows["sequence_id"], prefix)))
    stale = stale.filter(pc.greater(stale["num_trainable"], 0))
    if stale.num_rows == 0:
        return
    masks = [[0] * len(ids) for ids in stale["input_ids"].to_pylist()]
    stale = stale.drop_columns(["num_tokens", "num_trainable", "recorded_at"])
    stale = stale.set_column(stale.schema.get_field_index("assistant_mask"), "assistant_mask",
                             pa.array(masks, stale.schema.field("assistant_mask").type))
    run.write_tokens(stale)
