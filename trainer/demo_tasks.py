"""The demo's two tasks and their ART-style rollout, written against `model.openai_client()`.

- "code lookup" (the tiny model): a user asks for the code of a box; the agent has called its
  `lookup_code` tool, which answered with a digit; the agent must now answer with the code.
  Reward 1 for an answer that starts with a digit, else 0 (`correct`: the right digit).
- "addition" (SmolLM2-135M-Instruct): "What is 47 + 38? Reply with only the number." Reward:
  0.4 for a reply that starts with a number, + 0.3 if it is only that number, + 0.3 if it is
  the sum (`addition_score`). The base model (a 4-bit 135M model) mostly answers in words
  ("To calculate 59 + 6...", "A simple yet effective answer: ..."): val/reward starts near 0.05,
  and the format is what it learns first.

    group = await rollout_group(model, ADDITION, scenario, n=8, seed=17)

One request per group, with `n` choices: on a CPU, one batched `generate` of n sequences costs
about as much as one sequence, while n requests would be served one after another.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import artstore as art
from trainer.rollout import hf


@dataclass(frozen=True)
class Task:
    """A task: its scenarios, the conversation for one, how to score a reply, and its limits."""

    project: str
    tools: list[dict[str, Any]] | None
    max_tokens: int
    messages: Callable[[Any], list[dict[str, Any]]]
    score: Callable[[art.Choice, Any], tuple[float, dict[str, float | bool]]]
    train_scenarios: Callable[[random.Random, int], list[Any]]
    val_scenarios: list[Any]


# -- code lookup (tiny model, with a tool call in the conversation) ------------------------------
LOOKUP_SYSTEM = "You are a helpful assistant. Look codes up with the tool, then answer with the code."
LOOKUP_TOOLS = [{
    "type": "function",
    "function": {"name": "lookup_code", "description": "The code of a box (one digit).",
                 "parameters": {"type": "object", "properties": {"box": {"type": "integer"}}}},
}]  # fmt: skip


def lookup_messages(box: int) -> list[dict[str, Any]]:
    """The conversation up to the agent's answer: question, tool call, tool result."""
    call = {"id": f"call_{box}", "type": "function",
            "function": {"name": "lookup_code", "arguments": f'{{"box": {box}}}'}}  # fmt: skip
    return [
        {"role": "system", "content": LOOKUP_SYSTEM},
        {"role": "user", "content": f"What is the code of box {box}?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{box}", "content": f"The code is {box % 10}."},
    ]


def lookup_score(choice: art.Choice, box: int) -> tuple[float, dict[str, float | bool]]:
    answer = (choice.message.content or "").strip()
    reward = float(answer[:1].isascii() and answer[:1].isdigit())
    return reward, {"correct": answer[:1] == str(box % 10), "stopped": choice.finish_reason == "stop"}


CODE_LOOKUP = Task(
    project="code-lookup", tools=LOOKUP_TOOLS, max_tokens=4, messages=lookup_messages, score=lookup_score,
    train_scenarios=lambda rng, n: [rng.randrange(100, 1000) for _ in range(n)],
    val_scenarios=[101, 202, 303, 404, 505, 606],
)  # fmt: skip


# -- addition (a real pretrained model) -----------------------------------------------------------
BARE_NUMBER = re.compile(r"-?\d+")
LEADING_NUMBER = re.compile(r"-?\d+")


def addition_messages(pair: tuple[int, int]) -> list[dict[str, Any]]:
    a, b = pair
    return [{"role": "user", "content": f"What is {a} + {b}? Reply with only the number."}]


def addition_score(choice: art.Choice, pair: tuple[int, int]) -> tuple[float, dict[str, float | bool]]:
    """0.4 for a reply that starts with a number, + 0.3 when the reply is only that number, + 0.3
    when that number is the sum: the format is learnt first, in steps the base model can take."""
    answer = (choice.message.content or "").strip()
    first = LEADING_NUMBER.match(answer)
    bare = BARE_NUMBER.fullmatch(answer) is not None
    correct = first is not None and int(first.group()) == sum(pair)
    reward = 0.4 * (first is not None) + 0.3 * bare + 0.3 * correct
    return reward, {"starts_with_number": first is not None, "bare_number": bare, "correct": correct,
                    "stopped": choice.finish_reason == "stop"}


def addition_pairs(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [(rng.randrange(10, 100), rng.randrange(10, 100)) for _ in range(n)]


ADDITION = Task(
    project="addition", tools=None, max_tokens=8, messages=addition_messages, score=addition_score,
    train_scenarios=addition_pairs, val_scenarios=addition_pairs(random.Random(12345), 8),
)  # fmt: skip


# -- ART-style rollout ---------------------------------------------------------------------------
async def rollout_group(model: art.TrainableModel, task: Task, scenario: Any, n: int, seed: int) -> art.TrajectoryGroup:
    """`n` answers to one scenario from the model's endpoint, scored: one trajectory each. The same
    seed (and adapter) gives the same answers, so a step done again after a kill logs the same."""
    messages = task.messages(scenario)
    response = await model.openai_client().chat.completions.create(
        model=model.get_inference_name(), messages=messages, tools=task.tools, n=n,
        max_tokens=task.max_tokens, temperature=1.0, logprobs=True, seed=seed,
    )  # fmt: skip
    trajectories = []
    for choice in response.choices:
        reward, metrics = task.score(choice, scenario)
        trajectories.append(art.Trajectory(messages_and_choices=[*messages, choice], tools=task.tools,
                                           reward=reward, metrics=metrics))
    return art.TrajectoryGroup(trajectories, metadata={"scenario": str(scenario)})


# -- in-process sampling without the endpoint (tests of `model.train`) ---------------------------
Sampler = Callable[[list[dict[str, Any]], int, int], list[art.Trajectory]]


def hf_sampler(policy: Any, tokenizer: Any) -> Sampler:
    """Sample code-lookup answers with Hugging Face `generate` on the live adapter."""
    def sample_with(messages: list[dict[str, Any]], n: int, seed: int) -> list[art.Trajectory]:
        torch.manual_seed(seed)
        return hf.sample(policy, tokenizer, messages, tools=LOOKUP_TOOLS, n=n, max_new_tokens=CODE_LOOKUP.max_tokens)
    return sample_with


def rollouts(sampler: Sampler, boxes: list[int], n: int, seed: int) -> list[art.TrajectoryGroup]:
    """One scored group of `n` code-lookup answers per box; the same seed samples the same."""
    groups = []
    for k, box in enumerate(boxes):
        trajectories = sampler(lookup_messages(box), n, seed * 1000 + k)
        for t in trajectories:
            t.reward, t.metrics = lookup_score(t.messages_and_choices[-1], box)
            t.metadata = {"box": box}
        groups.append(art.TrajectoryGroup(trajectories))
    return groups
