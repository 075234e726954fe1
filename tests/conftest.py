"""Shared fixtures: a fresh store folder per test, and builders of realistic trajectories."""

from __future__ import annotations

import os

import pytest
from openai.types.chat.chat_completion import Choice

import artstore as art

pytest_plugins = ["tests.servers.fixtures"]

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("WANDB_SILENT", "true")


def tool_call_trajectory(reward: float, i: int = 0, **metrics: float | bool | int) -> art.Trajectory:
    """A small email-search rollout: system, user, a tool call, its result, the answer."""
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools."},
            {"role": "user", "content": f"When is the offsite for project {i}?"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{i}", "type": "function",
                                "function": {"name": "search_inbox", "arguments": f'{{"query": "offsite {i}"}}'}}],
            }),
            {"role": "tool", "tool_call_id": f"call_{i}", "content": '[{"email_id": "e1"}]'},
            Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": f"Day {i}."}),
        ],
        tools=[{"type": "function", "function": {"name": "search_inbox", "parameters": {"type": "object"}}}],
        reward=reward,
        metrics=metrics,
        metadata={"scenario_id": f"s-{i:03d}"},
        logs=[f"rollout {i}"],
    )


@pytest.fixture
def make_trajectory():
    return tool_call_trajectory


@pytest.fixture
def base_path(tmp_path):
    """A fresh store folder."""
    return str(tmp_path / "store")
