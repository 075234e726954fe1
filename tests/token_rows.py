"""Rows of the tokens table for tests: deterministic, with any sequence lengths."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime


def token_rows(lengths: Sequence[int], step: int = 0, split: str = "train", prefix: str = "t",
               tokenizer: str = "tiny", seed: int = 0) -> list[dict]:
    """One row per length; sequence i has ids seed+i, seed+i+1, ..., a mask of its second half and
    NaN logprobs on its first token."""
    rows = []
    for i, n in enumerate(lengths):
        rows.append({
            "sequence_id": f"{prefix}{step}-{i}", "trajectory_id": f"{prefix}{step}-{i}",
            "group_id": f"g{step}-{i // 4}", "log_id": f"log-{step}", "step": step, "split": split,
            "input_ids": [(seed + i + k) % 50_000 for k in range(n)],
            "assistant_mask": [int(k >= n // 2) for k in range(n)],
            "logprobs": [math.nan if k == 0 else -0.001 * (k % 1000) for k in range(n)],
            "reward": float(i % 3), "advantage": float(i % 3) - 1.0, "tokenizer": tokenizer,
            "recorded_at": datetime(2026, 11, 1, tzinfo=UTC),
        })
    return rows
