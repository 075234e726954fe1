"""A logging process for the crash tests: it logs in a loop until it is killed.

    python tests/crash_writer.py '{"store": ..., "prefix": "t3", "retry": "t2-7"}'   # one writer
    python tests/crash_writer.py --serve     # a fork server: one such JSON line per writer on stdin

A writer first logs `retry` again (the log that was in flight when the previous writer died), then
`{prefix}-0`, `{prefix}-1`, ... Before each `log_sync` it prints `try <log_id>`; after `log_sync`
returned, `ack <log_id>` (flushed), so every `ack` on stdout is a log the store acknowledged. The
content of a log is a pure function of its id (`log_content`), so a test can recompute it.

The fork server imports artstore once and forks one writer per line (printing `pid <pid>`, then
`exit <pid>` once it is reaped): starting a fresh interpreter costs ~1.5 s here, a fork ~10 ms.
Lance's runtime starts on first use, so the server, which never touches a table, forks safely.
"""

from __future__ import annotations

import json
import os
import random
import sys
import warnings
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openai.types.chat.chat_completion import Choice  # noqa: E402

import artstore as art  # noqa: E402
from artstore.log import inline_upkeep  # noqa: E402
from artstore.storage import compaction  # noqa: E402

PROJECT, MODEL = "crash", "writer"


def log_content(log_id: str) -> tuple[str, int, list[art.TrajectoryGroup]]:
    """(split, step, groups) of the log `log_id` ("{prefix}-{i}", prefix "t{trial}")."""
    rng = random.Random(log_id)
    trial, i = log_id[1:].split("-")
    step = int(trial) * 1000 + int(i)
    groups = []
    for g in range(rng.randint(1, 4)):
        trajectories = []
        for t in range(rng.randint(1, 6)):
            n = rng.randint(0, 3)
            trajectories.append(art.Trajectory(
                messages_and_choices=[
                    {"role": "system", "content": "Find the email."},
                    {"role": "user", "content": f"{log_id} g{g} t{t} " + "x" * rng.randint(0, 400)},
                    *[Choice(finish_reason="tool_calls", index=0, message={
                        "role": "assistant", "content": None,
                        "tool_calls": [{"id": f"c{k}", "type": "function",
                                        "function": {"name": "search", "arguments": f'{{"k": {k}}}'}}]})
                      for k in range(n)],
                    Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": f"done {t}"}),
                ],
                reward=rng.random(), metrics={"turns": n, "found": rng.random() < 0.5},
                metadata={"log": log_id, "g": g}, logs=[f"t{t}"],
            ))
        exceptions = [RuntimeError(f"rollout {g} failed")] if rng.random() < 0.2 else []
        groups.append(art.TrajectoryGroup([*trajectories, *exceptions], metadata={"g": g},
                                          metrics={"judge": rng.random()}))
    return ("train" if rng.random() < 0.5 else "val"), step, groups


def say(line: str) -> None:
    """One line to stdout in one write(2): the fork server and its child share the pipe, and a
    write of under PIPE_BUF bytes is never interleaved with another (print() may split it)."""
    os.write(1, (line + "\n").encode())


def write_forever(store: str, prefix: str, retry: str | None = None) -> None:
    """Log until killed. Maintenance runs often, so kills also land inside compaction/cleanup."""
    inline_upkeep.MAINTAIN_EVERY = 2
    compaction.COMPACT_AFTER_FRAGMENTS, compaction.COMPACT_TO_FRAGMENTS = 4, 2
    model = art.Model(name=MODEL, project=PROJECT, base_path=store, report_metrics=[],
                      retention=timedelta(seconds=0))
    ids = ([retry] if retry else []) + [f"{prefix}-{i}" for i in range(100_000)]
    for log_id in ids:
        split, step, groups = log_content(log_id)
        say(f"try {log_id}")
        model.log_sync(groups, split=split, step=step, log_id=log_id)
        say(f"ack {log_id}")


def serve() -> None:
    # Lance warns on every fork once imported; this server never starts Lance's runtime.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                write_forever(**json.loads(line))
            finally:
                os._exit(0)
        say(f"pid {pid}")
        os.waitpid(pid, 0)
        say(f"exit {pid}")


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        write_forever(**json.loads(sys.argv[1]))
