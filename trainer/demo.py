"""`make demo`: log a few steps of synthetic agent rollouts into ./.art and show the history.

(The trainer replaces the synthetic rollouts with real training of a tiny model.)
"""

from __future__ import annotations

import argparse
import random

from openai.types.chat.chat_completion import Choice

import artstore as art


def rollout(rng: random.Random, step: int, scenario: int) -> art.Trajectory:
    correct = rng.random() < 0.3 + 0.1 * step
    answer = f"The offsite is on day {scenario + 10}." if correct else "I could not find it."
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools."},
            {"role": "user", "content": f"When is the offsite for project {scenario}?"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": f"call_{scenario}", "type": "function",
                    "function": {"name": "search_inbox", "arguments": f'{{"query": "offsite {scenario}"}}'}}]}),
            {"role": "tool", "tool_call_id": f"call_{scenario}", "content": f'[{{"email_id": "e{scenario}"}}]'},
            Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": answer}),
        ],
        tools=[{"type": "function", "function": {"name": "search_inbox", "parameters": {"type": "object"}}}],
        reward=float(correct) + rng.uniform(-0.05, 0.05),
        metrics={"correct": correct, "num_tool_calls": 1},
        metadata={"scenario_id": f"s-{scenario:03d}"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-path", default=".art")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(0)
    model = art.Model(name="demo-agent", project="email-search", base_path=args.base_path, report_metrics=[])
    for step in range(args.steps):
        for split, n_groups in (("val", 4), ("train", 8)):
            groups = [art.TrajectoryGroup(rollout(rng, step, s) for _ in range(8)) for s in range(n_groups)]
            model.log_sync(groups, split=split, step=step)
    history = model.history().select(["step", "val/reward", "train/reward"]).to_pylist()
    for row in history:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    print(f"stored in {model.run.location.uri}; try: artstore runs --store {args.base_path}")


if __name__ == "__main__":
    main()
