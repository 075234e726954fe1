"""The JSON-lines protocol both benchmark drivers speak, and what they build alike.

``art_driver.py`` runs in ART's venv (Python 3.12) and must not import artstore;
``store_driver.py`` runs in the project's. So this module uses the standard library only.

Protocol: one JSON object per line on a private copy of stdout (``take_stdout``). At start the
driver writes its ready event; then each request ``{"cmd": NAME, "id": optional, ...arguments}``
gets one response ``{"ok": true, "cmd", "id", "seconds", ...}`` or ``{"ok": false, "cmd", "id",
"error", "traceback"}``; ``shutdown`` answers, then ends the loop.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any, TextIO


def take_stdout() -> TextIO:
    """A line-buffered stream on a copy of fd 1, for the protocol alone; fd 1 and ``sys.stdout``
    go to stderr from here on, so whatever a library prints cannot corrupt the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def reply(proto: TextIO, message: dict[str, Any]) -> None:
    proto.write(json.dumps(message, default=str) + "\n")
    proto.flush()


async def serve(proto: TextIO, driver: Any, ready: dict[str, Any]) -> None:
    """Write ``ready``, then answer requests from stdin with ``driver``'s public async methods
    until ``shutdown`` or end of input. Every failure is an answer, never a dead driver."""
    reply(proto, {"ok": True, "event": "ready", **ready})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd, req_id = None, None
        try:
            request = json.loads(line)
            cmd, req_id = request.pop("cmd"), request.pop("id", None)
            if cmd == "shutdown":
                reply(proto, {"ok": True, "cmd": cmd, "id": req_id, "seconds": 0.0})
                break
            if cmd.startswith("_") or not hasattr(type(driver), cmd):
                raise ValueError(f"unknown command {cmd!r}")
            result = await getattr(driver, cmd)(**request)
            reply(proto, {"ok": True, "cmd": cmd, "id": req_id, **result})
        except Exception as exc:
            reply(proto, {"ok": False, "cmd": cmd, "id": req_id,
                          "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def trajectory_fields(data: dict[str, Any], choice: Any) -> dict[str, Any]:
    """Keyword arguments of a ``Trajectory`` (ART's or artstore's) from a plain trajectory of
    ``benchmarks/synthetic.py``; items holding ``finish_reason`` become ``choice`` objects."""
    return {
        "messages_and_choices": [choice.model_validate(item) if "finish_reason" in item else item
                                 for item in data["messages_and_choices"]],
        "tools": data.get("tools"),
        "reward": data["reward"],
        "metrics": data.get("metrics", {}),
        "metadata": data.get("metadata", {}),
        "logs": data.get("logs", []),
        "additional_histories": data.get("additional_histories", []),
        "initial_policy_version": data.get("initial_policy_version"),
        "final_policy_version": data.get("final_policy_version"),
    }


def build_timed(build: Any, step: int, groups: list[dict[str, Any]] | None,
                synthetic: dict[str, Any] | None) -> tuple[Any, float]:
    """``(build(groups), seconds it took)``; without ``groups``, those of ``synthetic`` (a spec,
    see ``synthetic.step_from_spec``), generated untimed."""
    from benchmarks.synthetic import step_from_spec

    cpu = time.thread_time()
    if groups is None:
        groups = step_from_spec(step, synthetic)
    t = time.perf_counter()
    built = build(groups)
    seconds = time.perf_counter() - t
    HARNESS_CPU[0] += time.thread_time() - cpu
    return built, seconds


# CPU seconds this process spent making the data it logs (not the library's work): a log's
# answer gives ``cpu`` (the process's CPU time, every thread) and ``harness_cpu`` (this), so a
# benchmark can take the library's CPU per log, background threads included, as the difference.
HARNESS_CPU = [0.0]


def cpu_counters() -> dict[str, float]:
    return {"cpu": time.process_time(), "harness_cpu": HARNESS_CPU[0]}


async def warmup(driver: Any, scratch: str, *also: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """One small cycle in a scratch model, to pay first-call costs before timing: init, two val
    logs, read a step, history, best step, then each ``(command, arguments)`` of ``also``. The
    driver's state (its model) is as before afterwards."""
    from benchmarks.synthetic import make_step

    saved = dict(vars(driver))
    base = tempfile.mkdtemp(prefix="warmup-", dir=scratch)
    t = time.perf_counter()
    try:
        await driver.init(base, "warmup", "warmup")
        for step in (0, 1):
            await driver.log(step, "val", groups=make_step(step, 2, 4, seed=99))
        await driver.read_step(1, "val")
        await driver.history()
        await driver.best_checkpoint()
        for cmd, kwargs in also:
            await getattr(driver, cmd)(**kwargs)
    finally:
        vars(driver).update(saved)
        shutil.rmtree(base, ignore_errors=True)
    return {"seconds": time.perf_counter() - t}
