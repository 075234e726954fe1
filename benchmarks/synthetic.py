"""Deterministic synthetic agent-RL data, as plain Python structures.

Both sides of the side-by-side benchmarks (artstore and OpenPipe ART) log the same data, so this
module imports neither: it returns dicts, lists, strings and numbers only. The shapes follow what
ART's email-search agent (ART-E) produces and what ART stores:

- a trajectory is ``{"messages_and_choices", "tools", "reward", "metrics", "metadata", "logs",
  "additional_histories", "initial_policy_version", "final_policy_version"}``;
- ``messages_and_choices`` holds a system prompt (100-300 words), a user question, 1-4 assistant
  tool-call turns each followed by a tool result (a few hundred characters), and a final answer;
  assistant turns are OpenAI ``Choice``-shaped dicts (``finish_reason``, ``index``,
  ``logprobs: None``, ``message``) as ART keeps them, everything else is a chat message dict;
- a group is ``{"trajectories", "metadata", "metrics", "logs", "exceptions"}``: the rollouts of
  one scenario (8-16 by default), exceptions as ``{"type", "message", "traceback"}`` dicts.

A fraction of tool calls fail: their tool message content starts with :data:`TOOL_ERROR_PREFIX`
(see :func:`is_tool_failure`), so a "tool-call failure rate" query has a known answer
(:func:`tool_call_stats`).

Everything is a function of ``(seed, step)``: the same arguments give equal structures on any
machine and Python version. Structures share immutable strings and the ``tools`` list between
trajectories; treat them as read-only (copy before mutating).

Speed: 100k trajectories (about 0.5 GB of Python objects) in about 2 s on one core.
"""

from __future__ import annotations

import gc
import json
import random
from typing import Any

TOOL_ERROR_PREFIX = "ERROR"
"""Content prefix of a tool message whose call failed."""

DEFAULT_TOOL_FAILURE_RATE = 0.08
"""Fraction of tool calls that fail by default."""

DIFFICULTIES = ("easy", "medium", "hard")

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_inbox",
            "description": "Search the user's inbox by keywords and optional sender and dates. "
            "Returns up to max_results matching emails with a short snippet.",
            "parameters": {
                "type": "object",
                "properties": {
                    "keywords": {"type": "array", "items": {"type": "string"}},
                    "from_addr": {"type": "string"},
                    "sent_after": {"type": "string", "description": "YYYY-MM-DD"},
                    "sent_before": {"type": "string", "description": "YYYY-MM-DD"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                "required": ["keywords"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_email",
            "description": "Read the full body of one email by its message id.",
            "parameters": {
                "type": "object",
                "properties": {"message_id": {"type": "string"}},
                "required": ["message_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "list_folders",
            "description": "List the mail folders of the user's account.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]

_SYSTEM_SENTENCES = (
    "You are an email research assistant working for a busy professional.",
    "Your job is to answer the user's question using only the emails in their inbox.",
    "You can call tools to search the inbox and to read individual emails.",
    "Always search before you answer, and read the most promising emails in full.",
    "Search results only contain short snippets, which are often not enough to answer.",
    "Prefer specific keywords such as names, project codes, amounts and dates.",
    "If a search returns nothing useful, try different keywords or a wider date range.",
    "Do not invent facts that are not supported by an email you have read.",
    "When you are confident, give a short, direct answer and cite the message ids you used.",
    "If the inbox does not contain the answer, say that you could not find it.",
    "The user's inbox belongs to an employee of a large energy trading company.",
    "Emails were sent between 1999 and 2002 and may reference internal projects.",
    "Dates in tool arguments use the format YYYY-MM-DD.",
    "Keep your reasoning private and only output tool calls or the final answer.",
    "Never call the same tool with the same arguments twice in a row.",
    "You may call at most five tools before you must answer.",
    "Treat forwarded messages and replies as part of the same thread.",
    "Email addresses in the inbox are lowercase and end with the company domain.",
    "Amounts may be written in dollars, thousands or millions; normalise them in the answer.",
    "Be careful with time zones: meeting times are usually given in Central Time.",
    "When several emails disagree, trust the most recent one.",
    "Answer in one or two sentences unless the user asks for a list.",
    "A tool may fail with an error message; if it does, adjust the arguments and try again.",
    "Quote names exactly as they are written in the emails.",
)

_FIRST = ("jeff", "sara", "mark", "lisa", "kevin", "louise", "john", "tana", "phillip", "susan",
          "vince", "sally", "greg", "kay", "steven", "dana")
_LAST = ("skilling", "shackleton", "taylor", "kitchen", "presto", "lavorato", "arnold", "jones",
         "allen", "scott", "kaminski", "beck", "whalley", "mann", "kean", "davis")
_TOPICS = ("gas storage contract", "west desk bonus pool", "california power curve",
           "broadband deal", "risk committee agenda", "pipeline capacity auction",
           "weather derivatives pilot", "credit reserve", "Q3 earnings call", "london office move",
           "trading limits review", "eol launch", "dabhol plant", "offsite in houston",
           "legal review of the isda", "peaker plant financing")
_QUESTIONS = (
    "When is the {topic} meeting scheduled, according to {name}?",
    "What amount did {name} propose for the {topic}?",
    "Who asked {name} to review the {topic}?",
    "Which date was agreed for the {topic}?",
    "What did {name} say was the main risk of the {topic}?",
    "Where will the {topic} take place?",
)
_ANSWERS = (
    "The {topic} meeting is on {date} at {hour}:00 CT, per {name}'s email ({mid}).",
    "{name} proposed ${amount} million for the {topic} ({mid}).",
    "It was {other} who asked {name} to review the {topic} ({mid}).",
    "The agreed date for the {topic} is {date} ({mid}).",
    "{name} said the main risk of the {topic} is counterparty credit exposure ({mid}).",
    "The {topic} will take place in the 50th floor conference room ({mid}).",
    "I could not find an email that answers this question.",
)
_BODY_SENTENCES = (
    "Please see the attached term sheet and let me know if you have comments by Friday.",
    "We discussed this with the desk heads yesterday and everyone agreed in principle.",
    "Legal still needs to sign off before we can send anything to the counterparty.",
    "I have moved the call to {hour}:00 so that London can join.",
    "The numbers below are preliminary and should not be forwarded outside the group.",
    "Can you confirm the volumes with scheduling before we commit?",
    "As mentioned in my earlier note, the deadline is {date}.",
    "Thanks for pulling this together so quickly.",
    "Let's plan to revisit the {topic} after the board meeting.",
    "The revised proposal is ${amount} million over three years.",
)
_ERRORS = (
    "ERROR: search backend timed out after 10s",
    "ERROR: message_id not found in inbox",
    "ERROR: invalid date format for sent_after, expected YYYY-MM-DD",
    "ERROR: rate limit exceeded, retry later",
    "ERROR: tool execution failed: connection reset by peer",
)
_EXCEPTIONS = (
    ("RuntimeError", "rollout timed out after 120s"),
    ("openai.APIConnectionError", "Connection error."),
    ("ValueError", "model returned malformed tool call arguments"),
)


def _system_prompts(n: int = 48) -> tuple[str, ...]:
    """Fixed pool of system prompts of 100-300 words (independent of any seed)."""
    rng = random.Random(20240601)
    prompts = []
    for _ in range(n):
        target = rng.randint(100, 300)
        words: list[str] = []
        while len(words) < target:
            for sentence in rng.sample(_SYSTEM_SENTENCES, len(_SYSTEM_SENTENCES)):
                words.extend(sentence.split())
        prompts.append(" ".join(words[:target]).rstrip(".,;") + ".")
    return tuple(prompts)


_SYSTEM_PROMPTS = _system_prompts()
_PEOPLE = tuple(
    (f"{first.title()} {last.title()}", f"{first}.{last}@enron.com")
    for first in _FIRST for last in _LAST
)
_DATES = tuple(
    f"{y}-{m:02d}-{d:02d}" for y in range(1999, 2003) for m in range(1, 13) for d in range(1, 29)
)
_FOLDERS = ("inbox", "sent", "deleted_items", "archive")


def _pick(rng: random.Random, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.random() * len(seq))]


def is_tool_failure(message: dict[str, Any]) -> bool:
    """True when a chat message is a tool result whose call failed."""
    content = message.get("content")
    return (
        message.get("role") == "tool"
        and isinstance(content, str)
        and content.startswith(TOOL_ERROR_PREFIX)
    )


def tool_failure(rng: random.Random) -> str:
    """A failed tool call's result: a message starting with :data:`TOOL_ERROR_PREFIX`."""
    return _pick(rng, _ERRORS)


def _message_id(rng: random.Random) -> str:
    return f"<{rng.getrandbits(52):013x}@enron.com>"


def _fill(rng: random.Random, topic: str, name: str) -> dict[str, Any]:
    r = rng.random
    return {
        "topic": topic,
        "name": name,
        "other": _pick(rng, _PEOPLE)[0],
        "date": _pick(rng, _DATES),
        "hour": 8 + int(r() * 10),
        "amount": 2 + int(r() * 400),
        "mid": _message_id(rng),
    }


def _search_result(rng: random.Random, topic: str, fill: dict[str, Any]) -> str:
    # JSON written by hand (every string here is JSON-safe): json.dumps is the slow part.
    hits = []
    for _ in range(1 + int(rng.random() * 3)):
        snippet = _pick(rng, _BODY_SENTENCES).format(**fill)[:90]
        hits.append(
            f'{{"message_id": "{_message_id(rng)}", "subject": "RE: {topic}", '
            f'"from": "{_pick(rng, _PEOPLE)[1]}", "date": "{_pick(rng, _DATES)}", '
            f'"snippet": "{snippet}"}}'
        )
    return "[" + ", ".join(hits) + "]"


def _email_body(rng: random.Random, topic: str, mid: str, fill: dict[str, Any]) -> str:
    name, addr = _pick(rng, _PEOPLE)
    body = " ".join(
        _pick(rng, _BODY_SENTENCES) for _ in range(2 + int(rng.random() * 4))
    ).format(**fill)
    return (f"Message-ID: {mid}\nFrom: {addr}\nDate: {fill['date']}\nSubject: {topic}\n\n"
            f"{body}\n\n{name}")


def _tool_turn(
    rng: random.Random, topic: str, fill: dict[str, Any], failure_rate: float, first: bool,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """One assistant tool call (a Choice dict) and its tool message; True if the call failed."""
    r = rng.random
    call_id = f"call_{rng.getrandbits(64):016x}"
    mid = ""
    if first or r() < 0.45:
        fn = "search_inbox"
        words = topic.split()
        keywords = f'"{words[0]}", "{words[-1]}", "{fill["name"].split()[-1].lower()}"'
        after = f', "sent_after": "{_pick(rng, _DATES)}"' if r() < 0.5 else ""
        args = f'{{"keywords": [{keywords}]{after}, "max_results": {5 if r() < 0.5 else 10}}}'
    elif r() < 0.93:
        fn = "read_email"
        mid = _message_id(rng)
        args = f'{{"message_id": "{mid}"}}'
    else:
        fn, args = "list_folders", "{}"
    failed = r() < failure_rate
    if failed:
        content = tool_failure(rng)
    elif fn == "search_inbox":
        content = _search_result(rng, topic, fill)
    elif fn == "read_email":
        content = _email_body(rng, topic, mid, fill)
    else:
        content = json.dumps([*_FOLDERS, "projects/" + topic.split()[0]])
    choice = {
        "finish_reason": "tool_calls",
        "index": 0,
        "logprobs": None,
        "message": {
            "content": None,
            "refusal": None,
            "role": "assistant",
            "tool_calls": [{
                "id": call_id,
                "function": {"arguments": args, "name": fn},
                "type": "function",
            }],
        },
    }
    tool_msg = {"role": "tool", "tool_call_id": call_id, "content": content}
    return choice, tool_msg, failed


_N_CALLS = (1, 1, 1, 2, 2, 2, 2, 3, 3, 4)  # 1-4 tool calls, 2 the most common
_P_CORRECT = {"easy": 0.75, "medium": 0.5, "hard": 0.3}


def make_trajectory(
    rng: random.Random,
    scenario: dict[str, Any],
    rollout_idx: int,
    step: int,
    tool_failure_rate: float = DEFAULT_TOOL_FAILURE_RATE,
) -> dict[str, Any]:
    """One rollout of ``scenario`` (from :func:`make_scenario`) as a plain trajectory dict."""
    topic, difficulty = scenario["topic"], scenario["difficulty"]
    fill = _fill(rng, topic, scenario["name"])
    n_calls = _pick(rng, _N_CALLS)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": scenario["system"]},
        {"role": "user", "content": scenario["question"]},
    ]
    n_failed = 0
    for i in range(n_calls):
        choice, tool_msg, failed = _tool_turn(rng, topic, fill, tool_failure_rate, i == 0)
        messages.append(choice)
        messages.append(tool_msg)
        n_failed += failed
    correct = rng.random() < _P_CORRECT[difficulty] - 0.15 * n_failed
    answer = _pick(rng, _ANSWERS[:-1] if correct else _ANSWERS).format(**fill)
    messages.append({
        "finish_reason": "stop",
        "index": 0,
        "logprobs": None,
        "message": {"content": answer, "refusal": None, "role": "assistant", "tool_calls": None},
    })
    if correct:
        reward = 0.7 + 0.3 * rng.random() - 0.05 * n_calls
    else:
        reward = 0.25 * rng.random()
    reward = round(min(1.0, max(0.0, reward)), 4)
    scenario_id = scenario["scenario_id"]
    return {
        "messages_and_choices": messages,
        "tools": TOOLS,
        "reward": reward,
        "metrics": {"correct": correct, "num_turns": n_calls + 1, "num_tool_calls": n_calls},
        "metadata": {"scenario_id": scenario_id, "difficulty": difficulty},
        "logs": [
            f"rollout {rollout_idx} for {scenario_id}",
            f"tool calls: {n_calls}, failed: {n_failed}",
            f"judge: {'correct' if correct else 'incorrect'}",
        ],
        "additional_histories": [],
        "initial_policy_version": step,
        "final_policy_version": step,
    }


def make_scenario(rng: random.Random) -> dict[str, Any]:
    """A scenario: one question about the inbox, shared by the rollouts of a group."""
    idx = int(rng.random() * 50_000)
    topic = _pick(rng, _TOPICS)
    name = _pick(rng, _PEOPLE)[0]
    return {
        "scenario_id": f"email-{idx:05d}",
        "difficulty": _pick(rng, DIFFICULTIES),
        "topic": topic,
        "name": name,
        "system": _pick(rng, _SYSTEM_PROMPTS),
        "question": _pick(rng, _QUESTIONS).format(topic=topic, name=name),
    }


def make_group(
    rng: random.Random,
    step: int,
    group_size: int | None = None,
    tool_failure_rate: float = DEFAULT_TOOL_FAILURE_RATE,
    exception_rate: float = 0.0,
) -> dict[str, Any]:
    """A group of rollouts of one scenario; ``group_size=None`` draws 8-16."""
    scenario = make_scenario(rng)
    size = 8 + int(rng.random() * 9) if group_size is None else group_size
    trajectories = [
        make_trajectory(rng, scenario, i, step, tool_failure_rate) for i in range(size)
    ]
    exceptions = []
    if exception_rate and rng.random() < exception_rate:
        exc_type, msg = _pick(rng, _EXCEPTIONS)
        exceptions.append({
            "type": exc_type,
            "message": msg,
            "traceback": f"Traceback (most recent call last):\n  ...\n{exc_type}: {msg}\n",
        })
    rewards = [t["reward"] for t in trajectories]
    return {
        "trajectories": trajectories,
        "metadata": {"scenario_id": scenario["scenario_id"], "difficulty": scenario["difficulty"]},
        "metrics": {"judge_score": round(sum(rewards) / len(rewards), 4) if rewards else 0.0},
        "logs": [f"group {scenario['scenario_id']} judged by gpt-4.1-mini"],
        "exceptions": exceptions,
    }


def make_step(
    step: int,
    n_groups: int,
    group_size: int | None = None,
    seed: int = 0,
    *,
    tool_failure_rate: float = DEFAULT_TOOL_FAILURE_RATE,
    exception_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """The groups one training step logs: ``n_groups`` groups of ``group_size`` rollouts.

    ``group_size=None`` draws 8-16 rollouts per group. The result depends only on the arguments
    (``seed`` and ``step`` seed one generator), so both benchmark sides can regenerate it.
    ``exception_rate`` is the fraction of groups that carry one rollout exception.
    """
    rng = random.Random(f"artbench:{seed}:{step}")
    # The structures are acyclic; the cyclic collector would only rescan them (2.5x slower).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [
            make_group(rng, step, group_size, tool_failure_rate, exception_rate)
            for _ in range(n_groups)
        ]
    finally:
        if gc_was_enabled:
            gc.enable()


def step_from_spec(step: int, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``make_step`` from a driver's ``synthetic`` spec ({n_groups=32, group_size=16, seed=0,
    step, and make_step's keywords}); ``spec["step"]``, when given, overrides ``step``."""
    spec = dict(spec or {})
    return make_step(spec.pop("step", step), spec.pop("n_groups", 32), spec.pop("group_size", 16),
                     spec.pop("seed", 0), **spec)


def tool_call_stats(groups: list[dict[str, Any]]) -> tuple[int, int]:
    """``(tool_calls, failed_tool_calls)`` over the tool messages of ``groups``."""
    calls = failed = 0
    for group in groups:
        for trajectory in group["trajectories"]:
            for message in trajectory["messages_and_choices"]:
                if message.get("role") == "tool":
                    calls += 1
                    failed += is_tool_failure(message)
    return calls, failed


def count_trajectories(groups: list[dict[str, Any]]) -> int:
    """Number of trajectories in ``groups``."""
    return sum(len(group["trajectories"]) for group in groups)


def scaled_reward(reward: float, scale: float) -> float:
    """A template trajectory's reward rescaled for another step (both benchmark sides use this,
    so they store the same rewards): ``round(reward * scale, 4)``."""
    return round(reward * scale, 4)
