"""The demo killed with SIGKILL after its first checkpoint, then run again: it resumes at the
store's latest ready checkpoint, and the run's history has no step twice."""

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import artstore as art

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "4", "--val-every", "2", "--groups", "2", "--group-size", "4"]


def demo(base_path, **kw):
    env = {**os.environ, "LANCE_LOG": "error", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "trainer.demo", "--base-path", str(base_path), *ARGS],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_killed_demo_resumes_at_the_right_step_without_duplicates(tmp_path):
    run = art.open_store(tmp_path).run("code-lookup", "demo-agent")
    proc = demo(tmp_path)
    deadline = time.monotonic() + 300
    try:
        while (run.latest_checkpoint_step() or 0) < 1:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = run.latest_checkpoint_step()
    assert 1 <= killed_at < 4

    again = demo(tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert f"resuming code-lookup/demo-agent at step {killed_at}" in out

    assert run.latest_checkpoint_step() == 4
    status = {c["step"]: c["status"] for c in run.checkpoints().to_pylist()}
    assert sorted(status) == [1, 2, 3, 4] and "saving" not in status.values()
    # Every log() call is stored once: rollouts done again after the kill are seeded by step, so
    # they have the same content (and log id) as the ones the killed process stored. ART 0.5.23's
    # pattern logs a step's train groups with its training metrics at the new step (result.step).
    logs = run.logs().to_pylist()
    rollout_logs = collections.Counter((r["split"], r["step"]) for r in logs if r["num_trajectories"])
    assert max(rollout_logs.values()) == 1
    train_steps = {s for sp, s in rollout_logs if sp == "train"}
    assert {s for sp, s in rollout_logs if sp == "val"} == {0, 2, 4}
    # The kill may fall between a checkpoint and the train log of that step: at most that one is missing.
    assert train_steps <= {1, 2, 3, 4} and len(train_steps) >= 3 and set(range(killed_at + 1, 5)) <= train_steps
    history = run.history().to_pylist()
    for metric in ("val/reward", "train/reward", "loss/train"):
        steps = [r["step"] for r in history if r.get(metric) is not None]
        assert len(steps) == len(set(steps)), (metric, steps)
    trained = {r["step"] for r in history if r.get("loss/train") is not None}
    assert trained == train_steps
