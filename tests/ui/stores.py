"""Stores the UI tests look at, built with artstore's public API: a demo-like store (two runs with
tool-call rollouts, val/train metrics, group exceptions, logprobs, checkpoints with deletions, a
tag), and the ART fixtures imported."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob

import artstore as art
from artstore.art.importer import import_art

PROJECT = "email-search"
# Long names on purpose: the runs table must show them whole.
RUNS = ("agent-qwen2.5-0.5b-lr-5e-6-grpo-baseline-001", "agent-qwen2.5-0.5b-lr-2e-5-grpo-ablation-002")
STEPS = 6
LEARNING_RATES = (5e-6, 2e-5)
ART_FIXTURES = Path("/work/shared/fixtures/art")
if not ART_FIXTURES.is_dir():
    ART_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "art"


def _logprobs(text: str, rng: random.Random) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[ChatCompletionTokenLogprob(token=w, logprob=-rng.random(), bytes=None, top_logprobs=[])
                                  for w in text.split()])


def rollout(rng: random.Random, scenario: int, reward: float, failing_tool: bool = False) -> art.Trajectory:
    """A rollout of the email task: system, user, a search tool call and its result, a read, the answer."""
    answer = f"The offsite for project {scenario} is on day {rng.randint(1, 28)}; Dana organises it."
    search = json.dumps([{"email_id": f"e{scenario}", "subject": "Offsite planning"}])
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools to answer from the inbox."},
            {"role": "user", "content": f"When is the offsite for project {scenario}, and who organises it?"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{scenario}_a", "type": "function", "function": {
                    "name": "search_inbox", "arguments": f'{{"keywords": ["offsite", "project {scenario}"], "max_results": 5}}'}}]}),
            {"role": "tool", "tool_call_id": f"call_{scenario}_a",
             "content": "ERROR: search_inbox failed: upstream timed out after 30s" if failing_tool else search},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{scenario}_b", "type": "function", "function": {
                    "name": "read_email", "arguments": f'{{"message_id": "e{scenario}"}}'}}]}),
            {"role": "tool", "tool_call_id": f"call_{scenario}_b", "content": "From: dana@corp. The offsite is on day 12."},
            Choice(finish_reason="stop", index=0, logprobs=_logprobs(answer, rng),
                   message={"role": "assistant", "content": answer}),
        ],
        tools=[{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
               for n in ("search_inbox", "read_email")],
        reward=reward,
        metrics={"num_turns": 7, "correct": reward > 0.5, "tool_failures": int(failing_tool)},
        metadata={"scenario_id": f"s-{scenario:03d}", "difficulty": ("easy", "medium", "hard")[scenario % 3]},
        logs=[f"rollout of scenario {scenario}"],
    )


def groups(rng: random.Random, step: int, skill: float, n_groups: int, size: int = 4) -> list[art.TrajectoryGroup]:
    out = []
    for g in range(n_groups):
        # rewards peak at step 4, so the best checkpoint is not the latest
        mean = 0.2 + skill + 0.12 * min(step, 4) - 0.1 * max(0, step - 4)
        items: list = [rollout(rng, g, round(min(1.0, max(0.0, rng.gauss(mean, 0.05))), 3), failing_tool=rng.random() < 0.2)
                       for _ in range(size)]
        if g == 1 and step % 2 == 0:
            items.append(RuntimeError(f"rollout {g} timed out at step {step}"))  # a group exception
        out.append(art.TrajectoryGroup(items, metadata={"scenario": g}, metrics={"judge_score": rng.random()}))
    return out


def add_checkpoint(run: art.Run, step: int, nbytes: int) -> None:
    folder = Path(run.checkpoint_uri(step))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * nbytes)
    (folder / "adapter_config.json").write_text("{}")
    run.register_checkpoint(step)


def build_demo(root: Path) -> art.Store:
    """Two runs of STEPS steps (train every step, val every step), checkpoints every step with
    ART's pruning applied at step 3 (deletions with reasons) and a tag `before-step-4`."""
    uri = str(root)
    for i, name in enumerate(RUNS):
        rng = random.Random(i)
        model = art.Model(name=name, project=PROJECT, base_path=uri, report_metrics=[],
                          config={"learning_rate": LEARNING_RATES[i], "group_size": 4})
        run = model.run
        for step in range(1, STEPS + 1):
            model.log_sync(groups(rng, step, 0.1 * i, 3), split="train", step=step)
            model.log_sync(groups(rng, step, 0.1 * i, 2), split="val", step=step)
            model.log_sync(None, split="train", step=step, metrics={"loss": 1.0 / step + 0.05 * i, "grad_norm": rng.random()})
            add_checkpoint(run, step, 10_000 * step)
            if step == 3:
                run.tag("before-step-4")
                run.apply_retention(art.Policy.art("val/reward"))
    return art.open_store(uri)


def build_art(root: Path) -> art.Store:
    """The ART fixture runs (openpipe-art 0.5.9 and 0.5.23) imported into one store: both are
    fixture-proj/agent-001, so each is copied under its own project (art-0.5.9, art-0.5.23) first."""
    src = root / "art-src"
    for version in ("0.5.9", "0.5.23"):
        shutil.copytree(ART_FIXTURES / f"art-{version}" / "fixture-proj", src / f"art-{version}")
    store = art.open_store(str(root / "store"))
    import_art(store, str(src))
    return store
