"""The hot path: `log_sync` of one step of 512 tool-call trajectories (8 messages each), then
`Run.groups(step=...)` of that step read back. Prints median and min over repeats (ms), and the
CPU of the Python part of each alone: `encode_groups` (rows -> Arrow) and `decode_groups`
(Arrow -> objects), the rest being Lance.

    LANCE_LOG=error python -m benchmarks.log_hot_path [--steps 12] [--trajectories 512]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime

from openai.types.chat.chat_completion import Choice

import artstore as art
from artstore.records.encoding import DECODE_COLUMNS, decode_groups, encode_groups


def tool_call_trajectory(step: int, i: int) -> art.Trajectory:
    """8 messages: system, user, 2 tool-call rounds (assistant Choice + tool result), answer."""
    logprobs = {"content": [{"token": "Day", "logprob": -0.1, "bytes": [68, 97, 121], "top_logprobs": []}]}
    calls = [
        Choice(finish_reason="tool_calls", index=0, message={
            "role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{i}_{k}", "type": "function",
                            "function": {"name": "search_inbox", "arguments": f'{{"query": "offsite {i} {k}"}}'}}],
        })
        for k in range(2)
    ]
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools to answer."},
            {"role": "user", "content": f"When is the offsite for project {i} (step {step})?"},
            calls[0], {"role": "tool", "tool_call_id": f"call_{i}_0", "content": '[{"email_id": "e1"}]'},
            calls[1], {"role": "tool", "tool_call_id": f"call_{i}_1", "content": '[{"email_id": "e2"}]'},
            {"role": "user", "content": "Thanks, and the venue?"},
            Choice(finish_reason="stop", index=0, logprobs=logprobs,
                   message={"role": "assistant", "content": f"Day {i}, room {step}."}),
        ],
        tools=[{"type": "function", "function": {"name": "search_inbox", "parameters": {"type": "object"}}}],
        reward=(i % 7) / 7, metrics={"turns": 4, "correct": i % 2 == 0},
        metadata={"scenario_id": f"s-{i // 8:04d}"}, logs=[f"rollout {i}"],
    )


def step_groups(step: int, n: int) -> list[art.TrajectoryGroup]:
    return [art.TrajectoryGroup([tool_call_trajectory(step, g * 8 + j) for j in range(8)], metrics={"judge": 0.5})
            for g in range(n // 8)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--trajectories", type=int, default=512)
    a = p.parse_args()
    model = art.Model(name="bench", project="hot-path", base_path=tempfile.mkdtemp(), report_metrics=[])
    data = [step_groups(s, a.trajectories) for s in range(a.steps)]
    log_ms, read_ms, log_cpu, read_cpu = [], [], [], []
    for s, groups in enumerate(data):
        t, c = time.perf_counter(), time.process_time()
        model.log_sync(groups, split="train", step=s)
        log_ms.append((time.perf_counter() - t) * 1000)
        log_cpu.append((time.process_time() - c) * 1000)
        t, c = time.perf_counter(), time.process_time()
        back = model.run.groups(step=s)
        read_ms.append((time.perf_counter() - t) * 1000)
        read_cpu.append((time.process_time() - c) * 1000)
        assert back == groups
    print(f"{a.trajectories} trajectories x {a.steps} steps (first call: log {log_ms[0]:.0f} ms, read {read_ms[0]:.0f} ms)")
    encode_cpu, decode_cpu = [], []
    for s, groups in enumerate(data):
        c = time.process_time()
        traj, grp = encode_groups(groups, log_id="x", write_id="w", split="train", step=s,
                                  recorded_at=datetime.now(UTC))
        encode_cpu.append((time.process_time() - c) * 1000)
        traj = traj.select(list(DECODE_COLUMNS))  # what Run.groups reads
        c = time.process_time()
        decode_groups(grp, traj)
        decode_cpu.append((time.process_time() - c) * 1000)
    for name, wall, cpu in (("log_sync", log_ms, log_cpu), ("groups(step)", read_ms, read_cpu)):
        print(f"{name:13s} wall median {statistics.median(wall[1:]):6.1f} ms  min {min(wall[1:]):6.1f} ms  "
              f"cpu median {statistics.median(cpu[1:]):6.1f} ms (all threads)")
    print(f"of which Python: encode_groups cpu median {statistics.median(encode_cpu[1:]):.1f} ms, "
          f"decode_groups cpu median {statistics.median(decode_cpu[1:]):.1f} ms")


if __name__ == "__main__":
    main()
